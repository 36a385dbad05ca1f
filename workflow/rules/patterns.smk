# Termination patterns (LTPA): per scan x atlas x radius, from the scan's pkl and npy
# (config `patterns`; the files sit beside the npy, docs/ltpa.md). Both inputs are outputs
# of this workflow, so they are declared (inputs_of) and a rebuilt pkl or npy reruns the
# job; ltpa.study.staleness compares them with the sidecar like any other output's.
#
# Resources: ltpa.study.resources (see rules/index.smk). Two threads: the kernel splits each
# chunk of centers between them (0.6x the time of one thread at r=0, 0.5x at r=1 on a
# 10^6-streamline scan); Snakemake gives fewer when --cores is 1.


rule termination_patterns:
    input:
        unpack(inputs_of(RULE_PATTERNS)),
    output:
        patterns="{path}",
    log:
        log_pattern(RULE_PATTERNS),
    wildcard_constraints:
        **constraints(RULE_PATTERNS),
    group:
        group_of(RULE_PATTERNS)
    threads: 2
    resources:
        mem_mb=resource_of(RULE_PATTERNS, mem_mb),
        runtime=resource_of(RULE_PATTERNS, runtime_min),
    params:
        job=JOB,
        spec=threaded_spec_of(RULE_PATTERNS),
    shell:
        "{params.job} --log {log:q} {params.spec:q}"
