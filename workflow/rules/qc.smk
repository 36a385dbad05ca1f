# QC tables, report plots and provenance, under the workflow's results folder
# (config `results_dir`). Nothing here rehashes or relabels: the QC reads the
# outputs, their .json sidecars and (for lengths) the trk when it is on disk.

import snakemake as _snakemake

from ltpa.provenance import sha256_of

RESULTS = config.get("results_dir", "results").rstrip("/") or "."
ALL_TARGETS = build_targets(SCANS)  # including outputs kept while their inputs are archived
SCAN_IDS = [s.scan_id for s in SCANS]
GROUP = {s.scan_id: s.scan_group for s in SCANS}
REPORT_SCAN = config.get("report_scan") or SCAN_IDS[0]
if REPORT_SCAN not in GROUP:
    raise WorkflowError(
        f"config report_scan {REPORT_SCAN!r} is not a scan_id of {config['local_data']!r}"
    )
ATLAS_KEYS = sorted({t.atlas_key for t in ALL_TARGETS if t.rule == RULE_LABEL})


def scan_targets(scan_id, rule_name):
    return [t for t in ALL_TARGETS if t.scan.scan_id == scan_id and t.rule == rule_name]


def qc_inputs(wildcards):
    return {
        "pkl": [str(t.output) for t in scan_targets(wildcards.scan, RULE_INDEX)],
        "npy": [str(t.output) for t in scan_targets(wildcards.scan, RULE_LABEL)],
    }


def qc_params(wildcards):
    scan = next(s for s in SCANS if s.scan_id == wildcards.scan)
    pkl = scan_targets(wildcards.scan, RULE_INDEX)
    return {
        "scan_id": scan.scan_id,
        "pkl_path": str(pkl[0].output) if pkl else None,
        "atlases": [
            [t.atlas_key, str(t.output)]
            for t in scan_targets(wildcards.scan, RULE_LABEL)
        ],
        "trk_file": str(scan.trk_file) if scan.trk_file else None,
    }


def atlas_npys(atlas):
    return [
        (t.scan.scan_id, t.scan.scan_group, str(t.output))
        for t in ALL_TARGETS
        if t.rule == RULE_LABEL and t.atlas_key == atlas
    ]


def qc_outputs():
    """The QC, report and provenance files of `rule all` (none with `qc: false`)."""
    if not config.get("qc", True):
        return []
    out = [
        f"{RESULTS}/qc/summary.tsv",
        f"{RESULTS}/report/share_unlabeled.png",
        f"{RESULTS}/report/lengths.png",
        f"{RESULTS}/provenance/config.yaml",
    ]
    out += [f"{RESULTS}/report/connectivity/{a}.png" for a in ATLAS_KEYS]
    return out


rule qc_scan:
    input:
        unpack(qc_inputs),
    output:
        tsv=f"{RESULTS}/qc/scans/{{scan}}.tsv",
        lengths=f"{RESULTS}/qc/lengths/{{scan}}.tsv",
    log:
        f"{LOG_DIR}/qc_scan/scan_{{scan}}.log",
    wildcard_constraints:
        scan=ids_alternation(SCAN_IDS),
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    params:
        scan_id=lambda wc: qc_params(wc)["scan_id"],
        pkl_path=lambda wc: qc_params(wc)["pkl_path"],
        atlases=lambda wc: qc_params(wc)["atlases"],
        trk_file=lambda wc: qc_params(wc)["trk_file"],
        start=config.get("connection_ids_start_at", 1),
    script:
        "../scripts/qc_scan.py"


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
    conda:
        "../envs/ltpa.yaml"
    threads: 1
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
    conda:
        "../envs/ltpa.yaml"
    threads: 1
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
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    params:
        scans=[
            (s, GROUP[s], f"{RESULTS}/qc/lengths/{s}.tsv") for s in SCAN_IDS
        ],
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
    conda:
        "../envs/ltpa.yaml"
    threads: 1
    params:
        scans=lambda wc: atlas_npys(wc.atlas),
        report_scan=REPORT_SCAN,
    script:
        "../scripts/plot_connectivity.py"


rule provenance:
    output:
        config=f"{RESULTS}/provenance/config.yaml",
        provenance=f"{RESULTS}/provenance/provenance.yaml",
    log:
        f"{LOG_DIR}/provenance/provenance.log",
    localrule: True
    conda:
        "../envs/ltpa.yaml"
    params:
        # params, so that a changed config, JSON or version reruns this rule
        config=dict(config),
        local_data=str(Path(config["local_data"]).resolve()),
        local_data_sha256=sha256_of(config["local_data"]),
        ltpa_version=ltpa.__version__,
        snakemake_version=_snakemake.__version__,
    script:
        "../scripts/provenance.py"
