# Streamline -> voxel hashing (the per-scan .pkl) and the key-grid .trk.
#
# Resources, from benchmarks/ (`make bench`: peak RSS = GNU time %M of the job's
# process; synthetic QSDR trk of 75 MB / 10^5 and 750 MB / 10^6 streamlines):
#   index_streamlines  229 MB / ~520 MB  ->  ~200 MB + 0.43 x trk MB (numba + the
#                      voxel index, 8 bytes per (voxel, streamline) pair; the trk
#                      body is never resident: pages are released behind the
#                      kernels and the pkl body is copied file-to-file)
#   export_key_trk     243 MB / ~300 MB  ->  ~235 MB + 0.08 x trk MB
# The formulas below add ~30 % headroom; memory doubles on each retry (attempt)
# so a job killed for memory comes back bigger. Runtime (minutes) is generous:
# 10^6 streamlines take ~3 s of compute plus writing (fsync) the outputs, and
# the first job after an install compiles the kernels once (~10 s).


rule index_streamlines:
    input:
        unpack(inputs_of(RULE_INDEX)),
    output:
        pkl="{prefix}{scan}{suffix}",
    log:
        log_pattern(RULE_INDEX),
    wildcard_constraints:
        **constraints(RULE_INDEX),
    group:
        "scan_{scan}"
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((250 + 0.6 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 250) * attempt),
    params:
        spec=spec_of(RULE_INDEX),
    script:
        "../scripts/run_job.py"


rule export_key_trk:
    input:
        unpack(inputs_of(RULE_EXPORT)),
    output:
        trk="{prefix}{scan}{suffix}",
    log:
        log_pattern(RULE_EXPORT),
    wildcard_constraints:
        **constraints(RULE_EXPORT),
    group:
        "scan_{scan}"
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((300 + 0.15 * input.size_mb) * attempt),
        runtime=lambda wc, input, attempt: int((5 + input.size_mb / 250) * attempt),
    params:
        spec=spec_of(RULE_EXPORT),
    script:
        "../scripts/run_job.py"
