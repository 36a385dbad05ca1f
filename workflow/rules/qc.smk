# QC tables, report plots and provenance (targets and inputs: rules/qc_common.smk).
# Nothing here rehashes or relabels: the QC reads the outputs, their .json sidecars
# and (for lengths) the trk when it is on disk, chunk by chunk. Resources are fixed
# figures (qc_scan 2 GB as it walks a whole trk, the others 1 GB; 15 min; more on retry): a SLURM group job is sized when it is
# submitted, before these rules' inputs exist, so size-based formulas would read 0.
# The summary and plots read only the small per-scan tables (and plot_connectivity each npy
# once, summing per group): at 3,000 scans under 10 s each and ~100 MB RSS, whatever the
# number of scans (benchmarks/report_scale.py). qc_group_differences also reads each npy
# once, keeping per group running means and variances (ltpa.qc.groupdiff).


rule qc_scan:
    input:
        unpack(qc_inputs),
    output:
        tsv=f"{RESULTS}/qc/scans/{{scan}}.tsv",
        lengths=f"{RESULTS}/qc/lengths/{{scan}}.tsv",
    log:
        f"{LOG_DIR}/qc_scan/scan_{{scan}}.log",
    wildcard_constraints:
        scan="[^/]+",
    group:
        scan_group
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        job=JOB,
        spec=qc_spec,
    shell:
        "{params.job} --log {log:q} {params.spec:q}"


rule qc_summary:
    input:
        tsv=expand(f"{RESULTS}/qc/scans/{{scan}}.tsv", scan=SCAN_IDS),
    output:
        tsv=report(
            f"{RESULTS}/qc/summary.tsv",
            caption="../report/summary.rst",
            category="QC",
            labels={"table": "study summary"},
        ),
    log:
        f"{LOG_DIR}/qc_summary/summary.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        scans=[s.metadata for s in SCANS],
    script:
        "../scripts/qc_summary.py"


rule plot_share_unlabeled:
    input:
        tsv=f"{RESULTS}/qc/summary.tsv",
    output:
        png=report(
            f"{RESULTS}/report/share_unlabeled.png",
            caption="../report/share_unlabeled.rst",
            category="Plots",
            labels={"plot": "share unlabeled"},
        ),
    log:
        f"{LOG_DIR}/plot_share_unlabeled/plot.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    script:
        "../scripts/plot_share_unlabeled.py"


rule plot_lengths:
    input:
        tsv=expand(f"{RESULTS}/qc/lengths/{{scan}}.tsv", scan=SCAN_IDS),
    output:
        png=report(
            f"{RESULTS}/report/lengths.png",
            caption="../report/lengths.rst",
            category="Plots",
            labels={"plot": "streamline length"},
        ),
    log:
        f"{LOG_DIR}/plot_lengths/plot.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        scans=[(s, GROUP[s], f"{RESULTS}/qc/lengths/{s}.tsv") for s in SCAN_IDS],
    script:
        "../scripts/plot_lengths.py"


rule plot_connectivity:
    input:
        npy=lambda wc: [p for _, _, p in atlas_npys(wc.atlas)],
    output:
        png=report(
            f"{RESULTS}/report/connectivity/{{atlas}}.png",
            caption="../report/connectivity.rst",
            category="Plots",
            subcategory="connection counts",
            labels={"plot": "connection counts", "atlas": "{atlas}"},
        ),
    log:
        f"{LOG_DIR}/plot_connectivity/atlas_{{atlas}}.log",
    wildcard_constraints:
        atlas=ids_alternation(ATLAS_KEYS),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        scans=lambda wc: atlas_npys(wc.atlas),
        report_scan=REPORT_SCAN,
    script:
        "../scripts/plot_connectivity.py"


# per atlas with 2+ scan_groups of 2+ scans: Welch's t per region pair (ltpa.qc.groupdiff)
rule qc_group_differences:
    input:
        npy=lambda wc: [p for _, _, p in atlas_npys(wc.atlas)],
    output:
        tsv=report(
            f"{RESULTS}/qc/group_differences/{{atlas}}.tsv",
            caption="../report/group_differences_table.rst",
            category="QC",
            labels={"table": "group differences", "atlas": "{atlas}"},
        ),
    log:
        f"{LOG_DIR}/qc_group_differences/atlas_{{atlas}}.log",
    wildcard_constraints:
        atlas=ids_alternation(ATLAS_KEYS),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        scans=lambda wc: atlas_npys(wc.atlas),
        reference=config["reference_group"],
    script:
        "../scripts/qc_group_differences.py"


rule plot_group_differences:
    input:
        tsv=f"{RESULTS}/qc/group_differences/{{atlas}}.tsv",
    output:
        png=report(
            f"{RESULTS}/report/group_differences/{{atlas}}.png",
            caption="../report/group_differences.rst",
            category="Plots",
            subcategory="group differences",
            labels={"plot": "group differences", "atlas": "{atlas}"},
        ),
    log:
        f"{LOG_DIR}/plot_group_differences/atlas_{{atlas}}.log",
    wildcard_constraints:
        atlas=ids_alternation(ATLAS_KEYS),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    script:
        "../scripts/plot_group_differences.py"


rule provenance:
    output:
        config=f"{RESULTS}/provenance/config.yaml",
        provenance=f"{RESULTS}/provenance/provenance.yaml",
    log:
        f"{LOG_DIR}/provenance/provenance.log",
    localrule: True
    params:
        # params, so that a changed config, JSON or version reruns this rule
        config=dict(config),
        local_data=str(Path(config["local_data"]).resolve()),
        local_data_sha256=sha256_of(config["local_data"]),
        ltpa_version=ltpa.__version__,
        snakemake_version=_snakemake.__version__,
    script:
        "../scripts/provenance.py"
