# --keep-going with scans left out by the checks before any job (rules/common.smk,
# ltpa.study.study.load_study): this job fails once every other job has run, so the run ends
# non-zero; the end-of-run summary names each scan left out with its problems.


rule ltpa_left_out_scans:
    input:
        left_out_inputs,
    output:
        LEFT_OUT_FLAG,
    log:
        f"{LOG_DIR}/{RULE_LEFT_OUT}.log",
    localrule: True
    params:
        scans=GLUE.left_out_scans,
    shell:
        "echo 'ltpa: scans left out before any job (see the end-of-run summary):' "
        "{params.scans:q} > {log:q}; exit 1"
