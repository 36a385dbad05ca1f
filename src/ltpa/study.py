"""A study: local_data.json parsed, resolved, turned into targets and checked before any job.

``load_study`` is what the workflow (``common.smk``), ``ltpa validate`` and ``ltpa status``
call, so they catch the same problems at the same time: before any job runs, and in a dry
run. Every problem of the whole study is reported at once, each naming the scan, the field
and the file.

The path check resolves every output and input of the whole study (real paths: symlinked
folders included) and refuses an output that is any input of any scan, the JSON itself,
another output or another output's sidecar, an existing folder, or a symbolic link; outputs
that differ only by letter case get a warning (they are one file on a case-insensitive
file system).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LtpaError
from .localdata import problem_text, read_records
from .targets import RULE_MAP_B0, build_targets


@dataclass
class Study:
    path: Path  # the JSON, resolved
    scans: list
    targets: list  # every output the JSON names (ltpa.targets.Target)
    warnings: list = field(default_factory=list)


def load_study(local_data, config: dict | None = None) -> Study:
    """Read, validate, resolve and check a study; LtpaError listing every problem."""
    config = config or {}
    path = Path(local_data).resolve()
    scans, problems = read_records(path, config.get("data_root"))
    targets = build_targets(scans)
    path_problems, warnings = check_paths(path, targets)
    problems += path_problems
    if problems:
        raise LtpaError(problem_text(path, problems))
    return Study(path, scans, targets, warnings)


class _RealPaths:
    """realpath() of many files, resolving each folder once."""

    def __init__(self):
        self._dirs = {}

    def __call__(self, path) -> str:
        path = str(path)
        folder, name = os.path.split(path)
        real_dir = self._dirs.get(folder)
        if real_dir is None:
            real_dir = self._dirs[folder] = os.path.realpath(folder)
        full = os.path.join(real_dir, name)
        if os.path.islink(full):
            return os.path.realpath(full)
        return full


# what Snakemake takes for a wildcard in a file name ({name} or {name,constraint}): such a
# path cannot be an input or output of the workflow
_SNAKEMAKE_WILDCARD = re.compile(r"\{\s*[.\w]+\s*(,[^{}]*)?\}")


def check_paths(local_data: Path, targets) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the study's outputs against every input, each other and the JSON."""
    real = _RealPaths()
    problems, warnings = [], []
    braced = {}  # a folder or file whose name holds a {wildcard} -> the paths through it
    inputs = {}  # real path -> [(field, description)] of every input that names it
    for t in targets:
        for fld, p in list(t.inputs.items()) + [(t.output_field, t.output)]:
            if p is None:
                continue
            if fld != t.output_field:
                inputs.setdefault(real(p), []).append((fld, f"{t.where(fld)} {str(p)!r}"))
            m = _SNAKEMAKE_WILDCARD.search(str(p))
            if m:
                text = str(p)
                end = text.find("/", m.end())
                braced.setdefault(text if end < 0 else text[:end], []).append(
                    (t.where(fld), text, m.group(0)))
    for where, uses in braced.items():
        first, text, match = uses[0]
        more = f" (and {len(uses) - 1} more paths through it)" if len(uses) > 1 else ""
        problems.append(f"{first}: path {text!r} contains {match!r}, which Snakemake reads as a "
                        f"wildcard{more}; rename {where!r} (the ltpa command line can process "
                        f"it as it is)")
    json_real = real(local_data)
    written = {}  # real path -> description of what writes it (outputs and their sidecars)
    lowered = {}
    for t in targets:
        out = str(t.output)
        r = real(out)
        what = f"{t.where(t.output_field)} {out!r}"
        for p, role in ((r, "output"), (r + ".json", "sidecar")):
            desc = what if role == "output" else f"the sidecar of {what}"
            if p in written and written[p] != desc:
                problems.append(f"{desc}: is also written as {written[p]}; two entries cannot "
                                f"write the same file")
            written.setdefault(p, desc)
            if p == json_real:
                problems.append(f"{desc}: is the study's local_data.json itself; refusing to "
                                f"overwrite it")
            else:
                # a b0-mapped atlas is the volume_path its labelings read: that is its purpose
                clash = [d for fld, d in inputs.get(p, ())
                         if not (role == "output" and t.rule == RULE_MAP_B0
                                 and fld == "volume_path")]
                if clash:
                    problems.append(f"{desc}: is an input ({clash[0]}); refusing to overwrite "
                                    f"raw data")
        if os.path.islink(out):
            problems.append(f"{what}: is a symbolic link (to {os.path.realpath(out)!r}); give "
                            f"the real path of the output")
        elif os.path.isdir(out):
            problems.append(f"{what}: is an existing folder, not a file")
        low = r.lower()
        if low in lowered and lowered[low][0] != r:
            warnings.append(f"{what}: differs only by letter case from {lowered[low][1]}; on a "
                            f"case-insensitive file system they are one file")
        lowered.setdefault(low, (r, what))
    return _unique(problems), warnings


def _unique(items):
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]
