# Streamline -> voxel hashing (the per-scan .pkl) and the key-grid .trk.
#
# Resources: ltpa.study.resources.mem_mb / runtime_min of the job's spec, from its inputs'
# headers (bounds on what the step allocates for inputs of that shape, tested with
# degenerate inputs in tests/test_trust.py), times the attempt: a retried job asks for more.


rule index_streamlines:
    input:
        unpack(inputs_of(RULE_INDEX)),
    output:
        pkl="{path}",
    log:
        log_pattern(RULE_INDEX),
    wildcard_constraints:
        **constraints(RULE_INDEX),
    group:
        group_of(RULE_INDEX)
    threads: 1
    resources:
        mem_mb=resource_of(RULE_INDEX, mem_mb),
        runtime=resource_of(RULE_INDEX, runtime_min),
    params:
        job=JOB,
        spec=spec_of(RULE_INDEX),
    shell:
        "{params.job} --log {log:q} {params.spec:q}"


rule export_key_trk:
    input:
        unpack(inputs_of(RULE_EXPORT)),
    output:
        trk="{path}",
    log:
        log_pattern(RULE_EXPORT),
    wildcard_constraints:
        **constraints(RULE_EXPORT),
    group:
        group_of(RULE_EXPORT)
    threads: 1
    resources:
        mem_mb=resource_of(RULE_EXPORT, mem_mb),
        runtime=resource_of(RULE_EXPORT, runtime_min),
    params:
        job=JOB,
        spec=spec_of(RULE_EXPORT),
    shell:
        "{params.job} --log {log:q} {params.spec:q}"
