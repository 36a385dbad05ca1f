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
__all__ = ["Entry", "MapEntry", "study_status", "format_status", "OK",
           "MISSING", "OUT_OF_DATE", "KEPT", "NEEDS_WORK"]


@dataclass
class Entry:
    """One output of the study and its status (``ltpa status``).

    Attributes
    ----------
    target : ltpa.study.targets.Target
        The output's target.
    status : str
        ``OK``, ``MISSING``, ``OUT_OF_DATE`` or ``KEPT``.
    reason : str
        Why, in words (may be empty).
    """

    target: object  # ltpa.study.targets.Target
    status: str
    reason: str = ""

    @property
    def rule(self):
        """The rule that makes the output (e.g. "index_streamlines")."""
        return self.target.rule

    @property
    def output(self):
        """The output's path, as a string."""
        return str(self.target.output)

    @property
    def kind(self):
        """What the output is, for the listing: "pkl", "pkl_trk", "npy <atlas key>",
        "patterns-r<radius> <atlas key>", or the rule's name (with its atlas key when keyed)."""
        k = KIND.get(self.target.rule, self.target.rule)
        if self.target.rule == RULE_PATTERNS:
            k = f"patterns-r{self.target.radius}"
        return f"{k} {self.target.atlas_key}" if self.target.atlas_key else k


@dataclass
class MapEntry:
    """A study map of the config (``maps``): its output and verdict."""

    name: str
    output: str
    status: str
    reason: str = ""
    rule: str = "ltpa_map"


def study_status(study) -> list[Entry]:
    """One Entry per output the JSON names, in study order (a loaded ``ltpa.study.study.Study``).

    Parameters
    ----------
    study : ltpa.study.study.Study
        The loaded study; its ``targets`` and their ``verdicts`` are paired in order.

    Returns
    -------
    list of Entry
        One per target with a verdict, with the verdict's status and reason (none when the
        study was loaded without verdicts).
    """
    return [Entry(t, v.status, v.reason) for t, v in zip(study.targets, study.verdicts)]


def format_status(entries, maps=(), *, tsv=False) -> str:
    """Per scan, each output's status, then the study maps' (``maps``: MapEntry); with
    ``tsv``: status, rule, scan, output, reason lines (a map's scan_id is empty).

    Parameters
    ----------
    entries : list of Entry
        The outputs (``study_status``), grouped by scan as they come.
    maps : sequence of MapEntry, optional
        The study maps, listed after the outputs (default none).
    tsv : bool, optional
        Write a tab-separated table with a header line instead of the listing.

    Returns
    -------
    str
        The text, without a final newline: per scan a line "scan_id (scan_group)" and one
        line per output (status, kind, path, reason), then "study maps" with one line per
        map, then a line counting the scans and the outputs per status. With ``tsv``: the
        header and one line per output and map.
    """
    lines = []
    if tsv:
        lines.append("status\trule\tscan_id\toutput\treason")
        for e in entries:
            lines.append("\t".join([e.status, e.rule, e.target.scan.scan_id, e.output, e.reason]))
        for m in maps:
            lines.append("\t".join([m.status, m.rule, "", m.output, m.reason]))
        return "\n".join(lines)
    width = max([len(e.status) for e in [*entries, *maps]] + [2])
    kind_width = max([len(e.kind) for e in entries] + [3])
    scan = None
    for e in entries:
        if e.target.scan.scan_id != scan:
            scan = e.target.scan.scan_id
            lines.append(f"{scan} ({e.target.scan.scan_group})")
        reason = f"  ({e.reason})" if e.reason else ""
        lines.append(f"  {e.status:<{width}}  {e.kind:<{kind_width}}  {e.output}{reason}")
    if maps:
        lines.append("study maps")
    for m in maps:
        reason = f"  ({m.reason})" if m.reason else ""
        lines.append(f"  {m.status:<{width}}  {'map ' + m.name:<{kind_width}}  {m.output}{reason}")
    everything = list(entries) + list(maps)
    counts = {s: sum(e.status == s for e in everything) for s in (OK, MISSING, OUT_OF_DATE, KEPT)}
    n_scans = len({e.target.scan.scan_id for e in entries})
    lines.append(f"{n_scans} scans, {len(everything)} outputs: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
