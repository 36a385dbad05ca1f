# Targets, inputs and parameters of the QC rules (rules/qc.smk): QC tables, report
# plots and provenance under the workflow's results folder (config `results_dir`).

import os

import snakemake as _snakemake

from ltpa.study.provenance import sha256_of
from ltpa.study.spec import JobSpec

# the study's own folder (<json stem>.ltpa beside local_data.json), unless results_dir says
RESULTS = str(STUDY.work_dir)
SCAN_IDS = [s.scan_id for s in SCANS]
GROUP = {s.scan_id: s.scan_group for s in SCANS}
REPORT_SCAN = STUDY.report_scan
if REPORT_SCAN not in GROUP:
    stop(f"config report_scan {REPORT_SCAN!r} is not a scan_id of {config['local_data']!r}")
if config["reference_group"] is not None and config["reference_group"] not in GROUP.values():
    stop(
        f"config reference_group {config['reference_group']!r} is not a scan_group of "
        f"{config['local_data']!r} (its groups: {', '.join(sorted(set(map(str, GROUP.values()))))})"
    )
ATLAS_KEYS = sorted({t.atlas_key for t in ALL_TARGETS if t.rule == RULE_LABEL})


SCAN_OF = {s.scan_id: s for s in SCANS}
_BY_SCAN = {}
for _t in ALL_TARGETS:
    _BY_SCAN.setdefault((_t.scan.scan_id, _t.rule), []).append(_t)


def kept_outputs(scan_id):
    """The scan's outputs kept while their inputs are archived (flagged in the QC table)."""
    from ltpa.study.staleness import judge_all

    mine = [t for rule in (RULE_INDEX, RULE_LABEL) for t in scan_targets(scan_id, rule)]
    verdicts = judge_all([t.spec(config) for t in mine])
    return sorted(str(t.output) for t, v in zip(mine, verdicts) if v.status == KEPT)


def scan_targets(scan_id, rule_name):
    return _BY_SCAN.get((scan_id, rule_name), [])


def qc_inputs(wildcards):
    return {
        "pkl": [str(t.output) for t in scan_targets(wildcards.scan, RULE_INDEX)],
        "npy": [str(t.output) for t in scan_targets(wildcards.scan, RULE_LABEL)],
    }


@_signature_known
def qc_spec(wildcards):
    """Param function: the scan's QC job (step "qc_scan" of ltpa.jobs.pipeline, run by
    ltpa-job like the data jobs) as JSON. Its inputs are the pkl and npys it reads (watched
    while it runs); the trk, read for the lengths when on disk, is not an input."""
    scan = SCAN_OF[wildcards.scan]
    pkl = scan_targets(wildcards.scan, RULE_INDEX)
    atlases = [[t.atlas_key, str(t.output)] for t in scan_targets(wildcards.scan, RULE_LABEL)]
    inputs = {"pkl_path": str(pkl[0].output) if pkl else None}
    inputs.update({f"numpy_path:{key}": npy for key, npy in atlases})
    extra = {
        "lengths": os.path.abspath(f"{RESULTS}/qc/lengths/{wildcards.scan}.tsv"),
        "atlases": atlases,
        "trk_file": str(scan.trk_file) if scan.trk_file else None,
        "kept": kept_outputs(wildcards.scan),
    }
    return JobSpec(
        "qc_scan",
        os.path.abspath(f"{RESULTS}/qc/scans/{wildcards.scan}.tsv"),
        inputs=inputs,
        scan_id=scan.scan_id,
        start=config["connection_ids_start_at"],
        sidecar=False,
        extra=extra,
    ).to_json()


def atlas_npys(atlas):
    return [
        (t.scan.scan_id, t.scan.scan_group, str(t.output))
        for t in ALL_TARGETS
        if t.rule == RULE_LABEL and t.atlas_key == atlas
    ]


def compared_atlases():
    """The atlases with a group comparison: 2+ scan_groups of 2+ scans (ltpa.qc.groupdiff)."""
    from collections import Counter

    from ltpa.qc.groupdiff import comparisons

    return [a for a in ATLAS_KEYS if comparisons(Counter(group for _, group, _ in atlas_npys(a)))]


def qc_outputs():
    """The QC, report and provenance files that the target rule asks for (none when qc is off)."""
    if not config["qc"]:
        return []
    out = [
        f"{RESULTS}/qc/summary.tsv",
        f"{RESULTS}/report/share_unlabeled.png",
        f"{RESULTS}/report/lengths.png",
        f"{RESULTS}/provenance/config.yaml",
    ]
    out += [f"{RESULTS}/report/connectivity/{a}.png" for a in ATLAS_KEYS]
    for a in compared_atlases():
        out += [
            f"{RESULTS}/qc/group_differences/{a}.tsv",
            f"{RESULTS}/report/group_differences/{a}.png",
        ]
    return out
