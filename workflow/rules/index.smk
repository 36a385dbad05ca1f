# Streamline -> voxel hashing (the per-scan .pkl) and the key-grid .trk.
#
# Resources: peak RSS of hashing measured in benchmarks/ is about 1.6 x the
# trk size plus ~150 MB of interpreter and libraries; memory doubles on each
# retry (attempt) so a job killed for memory comes back bigger.


rule index_streamlines:
    input:
        unpack(inputs_of(RULE_INDEX)),
    output:
        pkl="{prefix}{scan}{suffix}",
    log:
        log_pattern(RULE_INDEX),
    wildcard_constraints:
        **constraints(RULE_INDEX),
    conda:
        "../envs/ltpa.yaml"
    group:
        "scan_{scan}"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((300 + 2.0 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 100) * attempt),
    params:
        scan_id=param_of(RULE_INDEX, lambda t: t.scan.scan_id),
        space=param_of(RULE_INDEX, lambda t: t.scan.space),
        legacy_dsi2_mni_offset=config.get("legacy_dsi2_mni_offset", False),
        properties=param_of(RULE_INDEX, lambda t: t.scan.metadata),
    script:
        "../scripts/index.py"


rule export_key_trk:
    input:
        unpack(inputs_of(RULE_EXPORT)),
    output:
        trk="{prefix}{scan}{suffix}",
    log:
        log_pattern(RULE_EXPORT),
    wildcard_constraints:
        **constraints(RULE_EXPORT),
    conda:
        "../envs/ltpa.yaml"
    group:
        "scan_{scan}"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((300 + 1.2 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 100) * attempt),
    params:
        scan_id=param_of(RULE_EXPORT, lambda t: t.scan.scan_id),
        space=param_of(RULE_EXPORT, lambda t: t.scan.space),
        legacy_dsi2_mni_offset=config.get("legacy_dsi2_mni_offset", False),
    script:
        "../scripts/export_trk.py"
