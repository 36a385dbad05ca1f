# Endpoint labeling: one connection id per streamline, per scan and atlas.
#
# Resources, from benchmarks/ (`make bench`: peak RSS = GNU time %M of the job's
# process): label_streamlines 223 MB at 10^5 streamlines (75 MB trk), ~250 MB at
# 10^6 (750 MB trk) -> ~220 MB + 0.04 x input MB (numba, the atlas and 8 bytes of
# ids per streamline; the trk body is never resident). The formula adds headroom;
# doubled on each retry. Runtime (minutes) is generous: ~1.5 s at 10^6.


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
        mem_mb=lambda wc, input, attempt: int((300 + 0.1 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 500) * attempt),
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
        mem_mb=lambda wc, input, attempt: int((500 + 20 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: 5 * attempt,
    params:
        spec=spec_of(RULE_MAP_B0),
    script:
        "../scripts/run_job.py"
