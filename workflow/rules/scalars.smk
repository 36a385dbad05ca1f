# Track scalars: DSI Studio's per-streamline text export -> mean per streamline.


rule average_track_scalars:
    input:
        unpack(inputs_of(RULE_SCALARS)),
    output:
        npy="{prefix}{scan}{middle}{atlas}{suffix}",
    log:
        log_pattern(RULE_SCALARS),
    wildcard_constraints:
        **constraints(RULE_SCALARS),
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    resources:
        mem_mb=resource_of(RULE_SCALARS, mem_mb),
        runtime=resource_of(RULE_SCALARS, runtime_min),
    params:
        spec=spec_of(RULE_SCALARS),
    script:
        "../scripts/run_job.py"
