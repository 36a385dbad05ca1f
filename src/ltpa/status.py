"""What is missing? Every output of a local_data.json: ok, missing, out of date, or kept.

The same rules as the workflow (ltpa.targets) decide which files a study needs;
an output is out of date, as for Snakemake, when an input is newer, when an input
it depends on is itself missing or out of date, or when what it was built from
(its ``.json`` sidecar: input paths, space, numbering, metadata) differs from
what the JSON and the config say now. Snakemake's own records are not read, so
the answer does not depend on the working directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .pipeline import read_sidecar
from .targets import OPTIONAL_INPUTS, RULE_EXPORT, RULE_INDEX, RULE_LABEL, build_targets

OK = "ok"
MISSING = "missing"
OUT_OF_DATE = "out of date"
KEPT = "kept (inputs missing)"
NEEDS_WORK = (MISSING, OUT_OF_DATE)

KIND = {RULE_INDEX: "pkl", RULE_EXPORT: "pkl_trk", RULE_LABEL: "npy"}


@dataclass
class Entry:
    target: object  # ltpa.targets.Target
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
        return f"{k} {self.target.atlas_key}" if self.target.atlas_key else k


def _same_path(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return os.path.realpath(str(a)) == os.path.realpath(str(b))


def _normal(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _changed_params(t, side: dict, legacy: bool, start: int) -> list[str]:
    """What the sidecar says the output was built with that differs from now."""
    out = []
    build = side.get("build") or {}
    if side.get("scan_id") is not None and side["scan_id"] != t.scan.scan_id:
        out.append(f"scan_id was {side['scan_id']!r}")
    if t.rule in (RULE_INDEX, RULE_EXPORT):
        if "space" in build and build["space"] != t.scan.space:
            out.append(f"trk_space was {build['space']!r}, now {t.scan.space!r}")
        if ("legacy_dsi2_mni_offset" in build
                and bool(build["legacy_dsi2_mni_offset"]) != bool(legacy)):
            out.append(f"legacy_dsi2_mni_offset was {build['legacy_dsi2_mni_offset']}, now {legacy}")
    if t.rule == RULE_INDEX and "properties" in side:
        if _normal(side["properties"]) != _normal(t.scan.metadata):
            out.append("the scan's metadata changed (the pkl carries it)")
    if t.rule == RULE_LABEL:
        was = side.get("connection_ids_start_at")
        if was is not None and int(was) != int(start):
            out.append(f"connection_ids_start_at was {was}, now {start}")
        if side.get("atlas") is not None and side["atlas"] != t.atlas_key:
            out.append(f"atlas key was {side['atlas']!r}")
    return out


def study_status(scans, *, legacy_dsi2_mni_offset=False, connection_ids_start_at=1,
                 targets=None) -> list[Entry]:
    """One Entry per output the JSON names, in study order."""
    targets = build_targets(scans) if targets is None else targets
    produced = {t.output: t for t in targets}
    memo: dict = {}

    def status(t) -> Entry:
        key = (t.rule, t.output)
        if key in memo:
            return memo[key]
        memo[key] = Entry(t, OK)  # guards against cycles (the JSON check forbids them)
        memo[key] = e = _status(t)
        return e

    def _status(t) -> Entry:
        missing = []
        for fld, p in t.inputs.items():
            if p is None:
                if fld not in OPTIONAL_INPUTS:
                    missing.append(f"{fld} (not given)")
            elif not p.exists() and p not in produced:
                missing.append(f"{fld} {str(p)!r}")
        if not t.output.exists():
            if missing:
                return Entry(t, MISSING, "cannot be built: " + ", ".join(missing) + " missing")
            return Entry(t, MISSING)
        side = read_sidecar(t.output) or {}
        recorded = side.get("inputs") or {}
        if missing:
            for fld, p in t.inputs.items():
                before = recorded.get(fld)
                if p is not None and before is not None and not p.exists() \
                        and not _same_path(before, p):
                    return Entry(t, OUT_OF_DATE, f"built from {fld} {before!r}, the JSON now names "
                                                 f"{str(p)!r}, which does not exist")
            return Entry(t, KEPT, ", ".join(missing) + " missing")
        for fld, p in t.inputs.items():
            if p in produced:
                up = status(produced[p])
                if up.status in NEEDS_WORK:
                    return Entry(t, OUT_OF_DATE, f"its input {fld} {str(p)!r} is {up.status}")
        mtime = t.output.stat().st_mtime
        for fld, p in t.inputs.items():
            if p is not None and p.stat().st_mtime > mtime:
                return Entry(t, OUT_OF_DATE, f"{fld} {str(p)!r} is newer")
        for fld, p in t.inputs.items():
            if fld in recorded and not _same_path(recorded[fld], p):
                was = recorded[fld]
                return Entry(t, OUT_OF_DATE, f"{fld} was {was!r}, now "
                                             f"{str(p) if p is not None else None!r}")
        changed = _changed_params(t, side, legacy_dsi2_mni_offset, connection_ids_start_at)
        if changed:
            return Entry(t, OUT_OF_DATE, "; ".join(changed))
        return Entry(t, OK)

    return [status(t) for t in targets]


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


def read_config(path) -> dict:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def default_config() -> dict:
    """The workflow's config/config.yaml when this is a checkout, else {}."""
    path = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    return read_config(path) if path.exists() else {}
