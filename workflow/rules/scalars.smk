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
        mem_mb=lambda wc, input, attempt: int((300 + 0.2 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 50) * attempt),
    params:
        spec=spec_of(RULE_SCALARS),
    script:
        "../scripts/run_job.py"
