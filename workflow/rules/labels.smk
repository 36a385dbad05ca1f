# Endpoint labeling: one connection id per streamline, per scan and atlas.
#
# Resources: peak RSS of labeling measured in benchmarks/ is about 1.2 x the
# trk size plus the atlas; doubled on each retry.


rule label_streamlines:
    input:
        unpack(inputs_of(RULE_LABEL)),
    output:
        npy="{prefix}{scan}{middle}{atlas}{suffix}",
    log:
        log_pattern(RULE_LABEL),
    wildcard_constraints:
        **constraints(RULE_LABEL),
    conda:
        "../envs/ltpa.yaml"
    group:
        "scan_{scan}"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((300 + 1.5 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 100) * attempt),
    params:
        scan_id=param_of(RULE_LABEL, lambda t: t.scan.scan_id),
        atlas_key=param_of(RULE_LABEL, lambda t: t.atlas_key),
        start=config.get("connection_ids_start_at", 1),
    script:
        "../scripts/label.py"


rule map_b0_atlas:
    input:
        unpack(inputs_of(RULE_MAP_B0)),
    output:
        volume="{prefix}{scan}{middle}{atlas}{suffix}",
    log:
        log_pattern(RULE_MAP_B0),
    wildcard_constraints:
        **constraints(RULE_MAP_B0),
    params:
        scan_id=param_of(RULE_MAP_B0, lambda t: t.scan.scan_id),
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((500 + 20 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: 5 * attempt,
    conda:
        "../envs/ltpa.yaml"
    script:
        "../scripts/map_b0.py"
