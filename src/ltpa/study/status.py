"""What is missing? Every output of a local_data.json: ok, missing, out of date, or kept.

The same targets as the workflow (``ltpa.study.targets``) and the same verdicts
(``ltpa.study.staleness.judge_all``, which the workflow uses to decide what to rebuild), so
``ltpa status`` and ``snakemake -n`` agree; neither reads Snakemake's records.
"""

from __future__ import annotations

from dataclasses import dataclass

from .staleness import KEPT, MISSING, NEEDS_WORK, OK, OUT_OF_DATE
from .targets import RULE_EXPORT, RULE_INDEX, RULE_LABEL, RULE_PATTERNS

KIND = {RULE_INDEX: "pkl", RULE_EXPORT: "pkl_trk", RULE_LABEL: "npy"}
__all__ = ["Entry", "study_status", "format_status", "OK", "MISSING", "OUT_OF_DATE", "KEPT",
           "NEEDS_WORK"]


@dataclass
class Entry:
    target: object  # ltpa.study.targets.Target
    status: str
    reason: str = ""

    @property
    def rule(self):
        return self.target.rule

    @property
    def output(self):
        return str(self.target.output)

    @property
    def kind(self):
        k = KIND.get(self.target.rule, self.target.rule)
        if self.target.rule == RULE_PATTERNS:
            k = f"patterns-r{self.target.radius}"
        return f"{k} {self.target.atlas_key}" if self.target.atlas_key else k


def study_status(study) -> list[Entry]:
    """One Entry per output the JSON names, in study order (a loaded ``ltpa.study.study.Study``)."""
    return [Entry(t, v.status, v.reason) for t, v in zip(study.targets, study.verdicts)]


def format_status(entries, *, tsv=False) -> str:
    """Per scan, each output's status; with ``tsv``: status, rule, scan, output, reason lines."""
    lines = []
    if tsv:
        lines.append("status\trule\tscan_id\toutput\treason")
        for e in entries:
            lines.append("\t".join([e.status, e.rule, e.target.scan.scan_id, e.output, e.reason]))
        return "\n".join(lines)
    width = max([len(e.status) for e in entries] + [2])
    kind_width = max([len(e.kind) for e in entries] + [3])
    scan = None
    for e in entries:
        if e.target.scan.scan_id != scan:
            scan = e.target.scan.scan_id
            lines.append(f"{scan} ({e.target.scan.scan_group})")
        reason = f"  ({e.reason})" if e.reason else ""
        lines.append(f"  {e.status:<{width}}  {e.kind:<{kind_width}}  {e.output}{reason}")
    counts = {s: sum(e.status == s for e in entries) for s in (OK, MISSING, OUT_OF_DATE, KEPT)}
    n_scans = len({e.target.scan.scan_id for e in entries})
    lines.append(f"{n_scans} scans, {len(entries)} outputs: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
