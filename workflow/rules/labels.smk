# Endpoint labeling: one connection id per streamline, per scan and atlas.
#
# Resources: ltpa.resources (see rules/index.smk).


rule label_streamlines:
    input:
        unpack(inputs_of(RULE_LABEL)),
    output:
        npy="{prefix}{scan}{middle}{atlas}{suffix}",
    log:
        log_pattern(RULE_LABEL),
    wildcard_constraints:
        **constraints(RULE_LABEL),
    group:
        "scan_{scan}"
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    resources:
        mem_mb=resource_of(RULE_LABEL, mem_mb),
        runtime=resource_of(RULE_LABEL, runtime_min),
    params:
        spec=spec_of(RULE_LABEL),
    script:
        "../scripts/run_job.py"


rule map_b0_atlas:
    input:
        unpack(inputs_of(RULE_MAP_B0)),
    output:
        volume="{prefix}{scan}{middle}{atlas}{suffix}",
    log:
        log_pattern(RULE_MAP_B0),
    wildcard_constraints:
        **constraints(RULE_MAP_B0),
    group:
        "scan_{scan}"
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    resources:
        mem_mb=resource_of(RULE_MAP_B0, mem_mb),
        runtime=resource_of(RULE_MAP_B0, runtime_min),
    params:
        spec=spec_of(RULE_MAP_B0),
    script:
        "../scripts/run_job.py"
