# The per-scan data rules, one pattern: each output is made by `ltpa-job` from its job
# description (ltpa.study.spec.JobSpec, built once per target in rules/common.smk), whose
# step is the rule's: the pkl (index_streamlines), the key-grid .trk (export_key_trk), one
# npy per atlas (label_streamlines), b0 atlases mapped to QSDR (map_b0_atlas), track scalars
# (average_track_scalars) and termination patterns (termination_patterns; config
# `patterns`, docs/ltpa.md). The one wildcard, `path`, is the output's absolute path.
#
# Inputs: only the outputs of other jobs that a job reads (a b0-mapped atlas, the pkl and npy
# of a patterns job) and, for an output ltpa finds out of date, its rebuild stamp (see
# inputs_of); raw inputs are checked and compared with the sidecars by ltpa itself.
# Resources: ltpa.study.resources.mem_mb / runtime_min of the job's spec, from its inputs'
# headers (bounds on what the step allocates for inputs of that shape, tested with
# degenerate inputs in tests/test_trust.py), times the attempt: a retried job asks for more.
# Threads: 1, but 2 for termination patterns: the kernel splits each chunk of centers
# between them (0.6x the time of one thread at r=0, 0.5x at r=1 on a 10^6-streamline scan);
# Snakemake gives fewer when --cores is 1 (threaded_spec_of passes what it gives).

DATA_RULES = {
    RULE_INDEX: 1,
    RULE_EXPORT: 1,
    RULE_LABEL: 1,
    RULE_MAP_B0: 1,
    RULE_SCALARS: 1,
    RULE_PATTERNS: 2,
}


for _rule_name, _threads in DATA_RULES.items():

    rule:
        name:
            _rule_name
        input:
            unpack(inputs_of(_rule_name)),
        output:
            "{path}",
        log:
            log_pattern(_rule_name),
        wildcard_constraints:
            **constraints(_rule_name),
        group:
            group_of(_rule_name)
        threads: _threads
        resources:
            mem_mb=resource_of(_rule_name, mem_mb),
            runtime=resource_of(_rule_name, runtime_min),
        params:
            job=JOB,
            spec=(threaded_spec_of(_rule_name) if _threads > 1 else spec_of(_rule_name)),
        shell:
            "{params.job} --log {log:q} {params.spec:q}"
