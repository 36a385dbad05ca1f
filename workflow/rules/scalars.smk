# Track scalars: DSI Studio's per-streamline text export -> mean per streamline.


rule average_track_scalars:
    input:
        unpack(inputs_of(RULE_SCALARS)),
    output:
        npy="{path}",
    log:
        log_pattern(RULE_SCALARS),
    wildcard_constraints:
        **constraints(RULE_SCALARS),
    group:
        group_of(RULE_SCALARS)
    threads: 1
    resources:
        mem_mb=resource_of(RULE_SCALARS, mem_mb),
        runtime=resource_of(RULE_SCALARS, runtime_min),
    params:
        job=JOB,
        spec=spec_of(RULE_SCALARS),
    shell:
        "{params.job} --log {log:q} {params.spec:q}"
