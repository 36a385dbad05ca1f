# Endpoint labeling: one connection id per streamline, per scan and atlas.
#
# Resources: ltpa.study.resources (see rules/index.smk).


rule label_streamlines:
    input:
        unpack(inputs_of(RULE_LABEL)),
    output:
        npy="{path}",
    log:
        log_pattern(RULE_LABEL),
    wildcard_constraints:
        **constraints(RULE_LABEL),
    group:
        group_of(RULE_LABEL)
    threads: 1
    resources:
        mem_mb=resource_of(RULE_LABEL, mem_mb),
        runtime=resource_of(RULE_LABEL, runtime_min),
    params:
        job=JOB,
        spec=spec_of(RULE_LABEL),
    shell:
        "{params.job} --log {log:q} {params.spec:q}"


rule map_b0_atlas:
    input:
        unpack(inputs_of(RULE_MAP_B0)),
    output:
        volume="{path}",
    log:
        log_pattern(RULE_MAP_B0),
    wildcard_constraints:
        **constraints(RULE_MAP_B0),
    group:
        group_of(RULE_MAP_B0)
    threads: 1
    resources:
        mem_mb=resource_of(RULE_MAP_B0, mem_mb),
        runtime=resource_of(RULE_MAP_B0, runtime_min),
    params:
        job=JOB,
        spec=spec_of(RULE_MAP_B0),
    shell:
        "{params.job} --log {log:q} {params.spec:q}"
