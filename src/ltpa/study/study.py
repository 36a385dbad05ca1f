"""A study: local_data.json parsed, resolved, turned into targets and checked before any job.

``load_study`` is what the workflow (``common.smk``), ``ltpa validate`` and ``ltpa status``
call, so they catch the same problems at the same time: before any job runs, and in a dry
run. Every problem of the whole study is reported at once, each naming the scan, the field
and the file. In order:

1. the JSON: schema, records, field names close to known ones (``ltpa.study.localdata``);
2. paths (``check_paths``): every output and input of the whole study resolved (real paths,
   symlinked folders included); an output that is any input of any scan, the JSON itself,
   another output or another output's sidecar, an existing folder or a symbolic link is
   refused; outputs that differ only by letter case are warned about; a path that Snakemake
   would read as a wildcard (``{name}``) is refused;
3. what must be (re)built (``ltpa.study.staleness``): an output whose inputs are missing is an
   error when it must be built, a warning when it exists and is kept (archived inputs);
4. the inputs of what must be built (``check_inputs``), from their headers, cached by file
   identity (``ltpa.study.headers``): the streamline file's grid against its declared space; each
   atlas's grid against the streamlines' (the same grid up to axis flips and permutations
   is reoriented by index, with a note; another grid is an error naming both affines);
   region lists that do not fit their atlas (labels not in the list, regions not in the
   atlas; an error when more than ``max_unmatched_labels`` of the atlas's labels are
   unmatched); a reference volume that is 4-D (its first three axes are used, noted).

What a check finds that affects results without being an error is a ``Note`` (scan, atlas,
what, count): printed before the jobs, and again, with what the jobs found, at the end.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GeometryError, InputError, LtpaError
from ..formats.convert import kind_of
from ..formats.grids import (
    QSDR_GRID,
    conform_plan,
    describe_plan,
    grid_for,
    grid_of_affine,
    key_map_for,
    streamline_grid,
)
from ..io import atomic_open, read_regular
from ..prepared.b0map import _image_suffix
from .config import with_defaults
from .headers import InputFacts
from .localdata import problem_scan, problem_text, read_records, with_hints
from .sniff import foreign_kind
from .staleness import KEPT, NEEDS_WORK, OutputHashes, judge_all
from .targets import RULE_LABEL, RULE_MAP_B0, RULE_PATTERNS, build_targets

ARCHIVED_NOTE = "inputs archived, output kept"


@dataclass
class Note:
    """Something a check found that affects results without being an error.

    Attributes
    ----------
    scan : str
        The scan_id.
    atlas : str or None
        The atlas key it concerns, if any.
    what : str
        What was found (e.g. "atlas reoriented").
    count : int or None
        How many (labels, regions), when it is a count.
    detail : str
        More about it (e.g. how the atlas was reoriented, the first unmatched labels).
    """

    scan: str
    atlas: str | None
    what: str
    count: int | None = None
    detail: str = ""

    def line(self) -> str:
        """The note as one line: ``scan S, atlas A: what (count): detail`` (parts left out
        when empty).

        Returns
        -------
        str
            The line, without a newline; the atlas part is left out when ``atlas`` is empty,
            the count when it is None, the detail when it is empty.
        """
        atlas = f", atlas {self.atlas}" if self.atlas else ""
        count = f" ({self.count})" if self.count is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"scan {self.scan}{atlas}: {self.what}{count}{detail}"


@dataclass
class Study:
    """A loaded study (``load_study``): its scans, the outputs they name, and what the checks
    found.

    Attributes
    ----------
    path : pathlib.Path
        The local_data.json, resolved.
    scans : list of ltpa.study.localdata.ScanRecord
        The scans (with ``keep_going``, those not left out).
    targets : list of ltpa.study.targets.Target
        Every output the JSON names (and the termination patterns the config asks for).
    config : dict
        The config, with the schema's defaults.
    warnings : list of str
        What the checks warn about (e.g. existing outputs kept though their inputs are
        missing, keys that look misspelt).
    verdicts : list of ltpa.study.staleness.Verdict
        The verdict on each target, in order (empty for a study loaded with ``remote``).
    specs : dict
        ``(rule, output path)`` -> the ``ltpa.study.spec.JobSpec`` that makes it.
    notes : list of Note
        What the checks found that affects results without being an error.
    problems : list of str
        With ``strict=False``: the problems found in the inputs, which must be fixed before
        the jobs that use them run.
    left_out : dict
        With ``keep_going``: scan_id -> the problems that left the scan out.
    left_out_text : str
        With ``keep_going``: the listing ``load_study`` would otherwise have raised.
    """

    path: Path  # the JSON, resolved
    scans: list
    targets: list  # every output the JSON names (ltpa.study.targets.Target)
    config: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)  # ltpa.study.staleness.Verdict per target
    specs: dict = field(default_factory=dict)  # (rule, output) -> ltpa.study.spec.JobSpec
    notes: list = field(default_factory=list)  # Note
    problems: list = field(default_factory=list)  # what must be fixed before these jobs run
    left_out: dict = field(default_factory=dict)  # keep_going: scan_id -> its problems
    left_out_text: str = ""  # keep_going: the listing load_study would have raised

    @property
    def work_dir(self) -> Path:
        """The study's own folder for results, logs and caches: ``<json stem>.ltpa`` beside it."""
        return study_work_dir(self.path, self.config)

    @property
    def log_dir(self) -> Path:
        """Folder of the per-job logs: config ``log_dir``, by default ``<work_dir>/logs``."""
        log_dir = self.config["log_dir"]
        return Path(os.path.abspath(log_dir)) if log_dir else self.work_dir / "logs"

    @property
    def report_scan(self) -> str | None:
        """The scan whose connection matrices the report shows: config ``report_scan``, by
        default the first scan."""
        return self.config["report_scan"] or (self.scans[0].scan_id if self.scans else None)


def study_work_dir(local_data, config: dict) -> Path:
    """Config ``results_dir``, by default ``<json stem>.ltpa`` beside the JSON.

    Parameters
    ----------
    local_data : str or os.PathLike
        The study's local_data.json.
    config : dict
        The workflow config; its ``results_dir`` (empty or None: the default) is read.

    Returns
    -------
    pathlib.Path
        ``results_dir`` made absolute (against the current folder), or
        ``<json stem>.ltpa`` in the folder of the JSON's resolved path.
    """
    if config["results_dir"]:
        return Path(os.path.abspath(config["results_dir"]))
    local_data = Path(local_data).resolve()
    return local_data.parent / f"{local_data.stem}.ltpa"


def load_study(local_data, config: dict | None = None, check_inputs_of_jobs=True,
               strict=True, remote=False, only=None, keep_going=False) -> Study:
    """Read, validate, resolve and check a study; LtpaError listing every problem.

    Every stage runs on whatever the earlier ones could read, so one listing holds every
    problem of the study: fields (with the did-you-mean hints of misspelt keys), paths,
    missing inputs and headers.

    With ``strict=False`` (``ltpa status``), problems found after the JSON and its paths
    were read (missing inputs, bad headers) are returned in ``Study.problems`` instead.
    With ``keep_going`` (``snakemake --keep-going``), the scans whose inputs fail a check
    (missing, unreadable, a bad header or grid) are left out of the study
    (``Study.left_out``: scan_id -> its problems) and the others are kept; a problem of the
    JSON itself (fields, paths), or one that names no scan, still ends the run.
    ``remote``: the Snakefile parsed again inside a cluster job, whose driver checked the
    study already: no checks, and with ``only`` (the outputs the job makes) only the scans
    that make them.

    Parameters
    ----------
    local_data : str or os.PathLike
        The study's local_data.json.
    config : dict or None, optional
        The workflow config (None, default: every option's default); completed with the
        schema's defaults (``ltpa.study.config.with_defaults``), not changed.
    check_inputs_of_jobs : bool, optional
        Check the headers of the inputs of every output that must be (re)built
        (``check_inputs``); default True.
    strict : bool, optional
        Raise for every problem (default True); False: as above.
    remote : bool, optional
        Read the scans and their targets only, as above (default False).
    only : collection of str, optional
        With ``remote``: the absolute output paths whose scans are read; None (default):
        every scan.
    keep_going : bool, optional
        Leave out the scans whose inputs fail a check, as above (default False).

    Returns
    -------
    Study
        The study: its scans, targets, config, warnings, verdicts, job specs and notes
        (with ``remote``: scans, targets and config only), ``problems`` (with
        ``strict=False``) and ``left_out`` (with ``keep_going``).

    Raises
    ------
    LtpaError
        If the config has an invalid option, or the JSON cannot be read or is not a
        non-empty list of scans; else one message listing every problem of the study: any
        problem with ``strict``, a problem of the JSON's fields or paths in every case, and
        with ``keep_going`` a problem that names no scan, or problems that leave out every
        scan.
    """
    config = with_defaults(config)
    path = Path(local_data).resolve()
    if remote:
        scans, _, _ = read_records(path, config["data_root"],
                                   only=set(only) if only is not None else None)
        study = Study(path, scans, build_targets(scans, config), config)
        study.verdicts = []
        return study
    work_dir = study_work_dir(path, config)
    valid = _ValidScans(work_dir / "cache" / "schema.json")
    scans, problems, hints = read_records(path, config["data_root"],
                                          strict_fields=config["strict_fields"],
                                          valid_cache=valid.digests)
    valid.save()
    targets = build_targets(scans, config)
    log_dir = config["log_dir"]
    managed = [work_dir] + ([Path(os.path.abspath(log_dir))] if log_dir else [])
    path_problems, warnings = check_paths(path, targets, managed=managed,
                                          overwrite_foreign=config["overwrite_foreign"])
    problems += path_problems
    # the later stages run on every target that no problem so far concerns, so that a
    # header problem is listed with the field problems (of its own scan too: a misspelt
    # volume_path of one atlas does not hide a truncated trk); a target whose own fields
    # have a problem is left to it (its header problem would only repeat it: trk_space "tal")
    of_scan = {}
    for p in problems:
        of_scan.setdefault(problem_scan(p), []).append(p)
    refused = {t.output for t in targets if _concerned(t, of_scan.get(t.scan.index, ()))
               or any(str(t.output) in p for p in path_problems)}
    study = Study(path, scans, targets, config, list(warnings))
    specs = [t.spec(config) for t in targets]
    study.specs = {(t.rule, s.output): s for t, s in zip(targets, specs)}
    study.verdicts = judge_all(specs, hashes=_output_hashes(work_dir))
    for t, v in zip(targets, study.verdicts):
        if t.output in refused:
            continue
        if v.status == KEPT:
            study.warnings.append(f"{t.where()}: {v.reason}; keeping the existing output "
                                  f"{str(t.output)!r} as it is")
            study.notes.append(Note(t.scan.scan_id, t.atlas_key, ARCHIVED_NOTE,
                                    detail=v.reason))
    later = []
    for t, v in zip(targets, study.verdicts):
        if t.output not in refused and v.status in NEEDS_WORK and not v.buildable:
            later += unbuildable(t, v)
    if check_inputs_of_jobs:
        todo = [t for t, v in zip(targets, study.verdicts) if v.status in NEEDS_WORK
                and v.buildable and t.output not in refused]
        later += check_inputs(study, todo)
    problems += later
    early = len(problems) - len(later)
    # the JSON's own problems (fields, paths) are fixed in the JSON: they stop every run;
    # what the inputs' checks find is left out scan by scan with keep_going
    if problems and keep_going and not early:
        rest = _leave_out(study, problems, hints)
        if rest or not study.scans:  # a problem of no scan, or nothing left to build
            why = [] if rest else ["every scan has a problem: nothing is left to build"]
            raise LtpaError(problem_text(path, with_hints(problems, hints) + why))
        study.left_out_text = problem_text(path, with_hints(problems, hints))
        problems, early = [], 0
    listing = with_hints(problems, hints)
    # the JSON's and the paths' problems end even a status: what they name cannot be judged
    if problems and (strict or early):
        raise LtpaError(problem_text(path, listing))
    if not problems:
        kept = {sc.index for sc in study.scans}
        study.warnings[:0] = [h for h in hints if problem_scan(h) in kept]
    study.problems = listing
    return study


def _leave_out(study: Study, problems, hints) -> list[str]:
    """Leave the scans named by ``problems`` out of ``study`` (``Study.left_out``); returns
    the problems that name no scan."""
    by_scan, general = {}, []
    for p in problems:
        idx = problem_scan(p)
        (general if idx is None else by_scan.setdefault(idx, [])).append(p)
    if general:
        return problems
    names = {s.index: s.scan_id for s in study.scans}
    for idx in sorted(by_scan):
        study.left_out[names.get(idx, f"#{idx}")] = with_hints(
            by_scan[idx], [h for h in hints if problem_scan(h) == idx])
    keep = [i for i, t in enumerate(study.targets) if t.scan.index not in by_scan]
    study.scans = [s for s in study.scans if s.index not in by_scan]
    study.targets = [study.targets[i] for i in keep]
    study.verdicts = [study.verdicts[i] for i in keep]
    kept = {(t.rule, str(t.output)) for t in study.targets}
    study.specs = {k: v for k, v in study.specs.items() if k in kept}
    study.notes = [n for n in study.notes if n.scan not in study.left_out]
    return []


def _output_hashes(work_dir: Path):
    return OutputHashes(work_dir / "cache" / "outputs.json")


class _ValidScans:
    """sha256 of the scan entries the schema accepted before: not validated again."""

    def __init__(self, path: Path):
        self.path = path
        try:
            body = json.loads(read_regular(path, 64 << 20))
        except (OSError, ValueError, RecursionError):
            body = None
        self.digests = {d for d in body if isinstance(d, str)} if isinstance(body, list) \
            else set()
        self._before = len(self.digests)

    def save(self):
        if len(self.digests) == self._before:
            return
        try:
            with atomic_open(self.path, "w") as fh:
                json.dump(sorted(self.digests), fh)
        except (OSError, LtpaError):
            pass  # a read-only study folder: no cache, the same answers


def unbuildable(t, v) -> list[str]:
    """Messages for an output that must be (re)built but whose inputs are not there.

    Parameters
    ----------
    t : ltpa.study.targets.Target
        The output's target.
    v : ltpa.study.staleness.Verdict
        Its verdict: a status that needs work, and not buildable.

    Returns
    -------
    list of str
        One message, naming the field and the file, when an input's path changed to a file
        that does not exist (the path the output was built from is named too); else one
        per missing input; else (none named) one with the status and its reason.
    """
    out = str(t.output)
    if v.built_from is not None:
        fld, p = v.missing[0]
        return [f"{t.where(fld)}: file {p!r} does not exist, and the existing output {out!r} "
                f"was built from {v.built_from!r}; it must be rebuilt from the file the JSON "
                f"names now"]
    if v.missing:
        return [f"{t.where(fld)}: file {p!r} does not exist (needed to build {out!r})"
                for fld, p in v.missing]
    return [f"{t.where()}: {out!r} {v.status}: {v.reason}"]


# --------------------------------------------------------------------------- inputs


# fields of a scan whose problems say nothing of its inputs' headers
_HEADER_FREE_FIELDS = frozenset({"scan_id", "scan_group", "subject_id", "attributes"})
_FIELD = re.compile(r"scan #\d+ \('.*?'\), field '([^']+)'")
_ENTRY = re.compile(r"(track_labels|track_scalars)\[\d+\]")


def _concerned(target, mine) -> bool:
    """Whether one of ``mine`` (messages of the JSON's fields and paths about the target's
    scan) concerns ``target``: a problem that names no field, or a field that decides how its
    inputs are read (trk_file, trk_space, ...), or a field of its own track_labels or
    track_scalars entry. Problems of another entry of the scan, or of fields such as
    scan_group, leave its inputs to be checked."""
    if not mine:
        return False
    where = _FIELD.match(target.where(target.output_field))
    entry = _ENTRY.match(where.group(1)) if where else None
    own = f"{entry.group(0)}." if entry else None
    for p in mine:
        m = _FIELD.match(p)
        if m is None:
            return True
        fld = m.group(1)
        if _ENTRY.match(fld):
            if own is not None and fld.startswith(own):
                return True
            continue
        if fld.split(".")[0].split("[")[0] not in _HEADER_FREE_FIELDS:
            return True
    return False


def check_inputs(study: Study, targets) -> list[str]:
    """Header-level problems of the inputs of ``targets``; adds notes to ``study``.

    For a b0 atlas to map, the b0 atlas is a 3-D volume; for every target with streamlines,
    their grid fits their declared space (checked once per file, space and reference
    volume); for a labeling, the atlas's grid against the streamlines' and its labels
    against its region list. The header facts are cached by file identity in
    ``<work_dir>/cache/inputs.json``.

    Parameters
    ----------
    study : Study
        The study: its ``work_dir``, its targets (an atlas one of them makes is on the QSDR
        grid by construction) and its config's ``max_unmatched_labels``; its ``notes`` are
        added to.
    targets : iterable of ltpa.study.targets.Target
        The targets whose inputs are checked (those that must be built).

    Returns
    -------
    list of str
        The message of each target whose check failed (an LtpaError's, naming the scan, the
        field and the file), duplicates dropped, in order; empty when every check passed.
    """
    facts = InputFacts(study.work_dir / "cache" / "inputs.json")
    produced = {t.output: t for t in study.targets}
    problems = []
    grids = {}
    max_unmatched = float(study.config["max_unmatched_labels"])
    for t in targets:
        try:
            if t.rule == RULE_MAP_B0:
                _check_b0(t, facts)
                continue
            if "trk_file" not in t.inputs or t.inputs["trk_file"] is None:
                continue
            key = (t.inputs["trk_file"], t.scan.space, t.scan.reference_volume)
            if key not in grids:
                grids[key] = _streamline_grid(t, facts, study)
            grid = grids[key]
            if t.rule == RULE_LABEL and grid is not None:
                _check_atlas(t, grid, facts, produced, study, max_unmatched)
        except LtpaError as exc:
            problems.append(str(exc))
    facts.save()
    return _dedupe(problems)


def _streamline_grid(t, facts, study):
    """The grid the scan's streamlines are labeled in (checked against the declared space)."""
    path = t.inputs["trk_file"]
    where = t.where("trk_file")
    try:
        head = facts.streamlines(path)
    except LtpaError as exc:
        raise exc.in_context(where) from None
    space = t.scan.space
    if kind_of(path) in (".trk", ".trk.gz"):
        try:
            key_map_for(space, head["dim"], head["voxel_size"], head["voxel_order"],
                        where=f"file {str(path)!r}", vox_to_ras=head["vox_to_ras"])
        except LtpaError as exc:
            raise exc.in_context(where) from None
        return streamline_grid(space, head["dim"], head["voxel_size"], head["voxel_order"],
                               head["vox_to_ras"])
    if space != "native":
        return grid_for(space)
    ref = t.scan.reference_volume
    if ref is None:
        raise InputError(f"{t.where('reference_volume')}: is required: a .tck/.trx in trk_space "
                        f"'native' carries RAS mm and no grid; give a NIfTI that defines the grid")
    try:
        img = facts.nifti(ref)
    except LtpaError as exc:
        raise exc.in_context(t.where('reference_volume')) from None
    shape = img["shape"]
    if len(shape) == 4:
        study.notes.append(Note(t.scan.scan_id, None, "4-D reference_volume: its grid (first "
                                "three axes) is used", detail=str(ref)))
    elif len(shape) != 3:
        raise InputError(f"{t.where('reference_volume')}: file {str(ref)!r} has "
                        f"{len(shape)} dimensions; expected a 3-D (or 4-D) image")
    return grid_of_affine(shape[:3], img["affine"])


def _check_atlas(t, grid, facts, produced, study, max_unmatched):
    import numpy as np


    vol = t.inputs.get("volume_path")
    atlas = t.atlas_key
    if vol is None:
        return
    if vol in produced:  # made by map_b0_atlas: on the QSDR grid by construction
        plan = conform_plan(QSDR_GRID.dim, QSDR_GRID.affine, grid)
        if isinstance(plan, str):
            raise GeometryError(
                f"{t.where('volume_path')}: the atlas mapped from b0 space is on the "
                f"QSDR 2 mm grid, {plan[plan.index('but ') + 4:]}")
        return
    img = _volume_facts(t, "volume_path", "atlas file", facts)
    plan = _plan(img["shape"], img["affine"], grid)
    if isinstance(plan, str):
        raise GeometryError(f"{t.where('volume_path')}: atlas file {str(vol)!r} {plan}")
    if plan is not None:
        study.notes.append(Note(t.scan.scan_id, atlas, "atlas reoriented",
                                detail=describe_plan(plan, np.asarray(img["affine"]), grid)))
    try:
        labels = facts.atlas_labels(vol)
    except LtpaError as exc:
        raise exc.in_context(t.where('volume_path')) from None
    if t.inputs.get("graphml_path"):
        fld, kind = "graphml_path", "graphml"
    elif t.inputs.get("labels_path"):
        fld, kind = "labels_path", "table"
    else:
        study.notes.append(Note(t.scan.scan_id, atlas, "no region list: the atlas's own labels",
                                len(labels), "ids are comparable across scans only if every "
                                "atlas has the same labels"))
        return
    try:
        regions = facts.regions(t.inputs[fld], kind)
    except LtpaError as exc:
        raise exc.in_context(t.where(fld)) from None
    region_set = set(regions)
    unmatched = [v for v in labels if v not in region_set]
    absent = len(region_set - set(labels))
    if labels and len(unmatched) > max_unmatched * len(labels):
        raise InputError(
            f"{t.where(fld)}: {len(unmatched)} of the {len(labels)} labels of atlas "
            f"{str(vol)!r} are not in the region list {str(t.inputs[fld])!r} (e.g. "
            f"{', '.join(map(str, unmatched[:5]))}); more than {max_unmatched:.0%} "
            f"(max_unmatched_labels): is it the region list of another atlas or resolution?")
    if unmatched:
        study.notes.append(Note(t.scan.scan_id, atlas, "atlas labels not in the region list "
                                "(background)", len(unmatched),
                                ", ".join(map(str, unmatched[:10]))))
    if absent:
        study.notes.append(Note(t.scan.scan_id, atlas, "regions of the list not in the atlas",
                                absent))


_PLANS = {}


def _plan(shape, affine, grid):
    """conform_plan, once per distinct (atlas grid, streamline grid) of the study."""
    key = (tuple(shape), tuple(map(tuple, affine)), tuple(grid.dim),
           tuple(map(tuple, grid.affine.tolist())))
    if key not in _PLANS:
        _PLANS[key] = conform_plan(shape, affine, grid)
    return _PLANS[key]


def _check_b0(t, facts):
    _volume_facts(t, "b0_volume_path", "b0 atlas", facts)


def _volume_facts(t, fld, what, facts) -> dict:
    """The header facts of the target's input ``fld``, a 3-D label volume (LtpaError naming
    the field and the file otherwise)."""
    vol = t.inputs.get(fld)
    try:
        img = facts.nifti(vol)
    except LtpaError as exc:
        raise exc.in_context(t.where(fld)) from None
    if len(img["shape"]) != 3:
        raise InputError(f"{t.where(fld)}: {what} {str(vol)!r} has {len(img['shape'])} "
                        f"dimensions {tuple(img['shape'])}; expected a 3-D label volume")
    return img


def _dedupe(items):
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]


# --------------------------------------------------------------------------- paths


class _RealPaths:
    """realpath() of many files, resolving each folder once and each file once, with one
    lstat per file (kept: ``kind`` answers from it)."""

    def __init__(self):
        self._dirs = {}
        self._files = {}  # path -> (real path, st_mode of the lstat of the path in its real folder)

    def _resolve(self, path: str):
        hit = self._files.get(path)
        if hit is None:
            folder, name = os.path.split(path)
            real_dir = self._dirs.get(folder)
            if real_dir is None:
                real_dir = self._dirs[folder] = os.path.realpath(folder)
            full = os.path.join(real_dir, name)
            try:
                mode = os.lstat(full).st_mode
            except (OSError, ValueError):
                mode = 0
            hit = self._files[path] = (os.path.realpath(full) if stat.S_ISLNK(mode) else full,
                                       mode)
        return hit

    def __call__(self, path) -> str:
        return self._resolve(str(path))[0]

    def is_file(self, path) -> bool:
        """Whether there is a regular file at ``path`` (itself, not through a link)."""
        return stat.S_ISREG(self._resolve(str(path))[1])

    def kind(self, path) -> str | None:
        """'link' or 'folder' for a path that is one (itself, not through its folders)."""
        mode = self._resolve(str(path))[1]
        if stat.S_ISLNK(mode):
            return "link"
        if stat.S_ISDIR(mode):
            return "folder"
        return None


def _usable_name(path: str) -> bool:
    try:
        os.fsencode(path)
    except UnicodeError:
        return False
    return True


# what Snakemake takes for a wildcard in a file name ({name} or {name,constraint}): such a
# path cannot be an input or output of the workflow
_SNAKEMAKE_WILDCARD = re.compile(r"\{\s*[.\w]+\s*(,[^{}]*)?\}")


# the longest name the workflow derives from an output's: the temp file of its sidecar,
# ".<name>.json.ltpa-tmp-XXXXXXXX" (tempfile's 8 random characters), or of an image output
# written with its extension kept, ".<name>.ltpa-tmp-XXXXXXXX.nii.gz"
NAME_MAX = 255
_SIDECAR_TEMP_EXTRA = len(".") + len(".json") + len(".ltpa-tmp-") + 8


def _derived_extra(t) -> int:
    """Bytes the longest file name derived from ``t``'s output adds to its name."""
    if t.rule == RULE_MAP_B0:
        return max(_SIDECAR_TEMP_EXTRA,
                   len(".") + len(".ltpa-tmp-") + 8 + len(_image_suffix(t.output)))
    return _SIDECAR_TEMP_EXTRA


def check_paths(local_data: Path, targets, managed=(), overwrite_foreign=False) \
        -> tuple[list[str], list[str]]:
    """(problems, warnings) of the study's outputs against every input, each other, the JSON,
    the study's own folders (``managed``: results, caches, logs) and the files already at
    the output paths (one of another format is refused unless ``overwrite_foreign``).

    Paths are compared by their real paths (symlinked folders resolved).

    Parameters
    ----------
    local_data : pathlib.Path
        The study's local_data.json.
    targets : list of ltpa.study.targets.Target
        Every output of the study, with its inputs.
    managed : iterable of str or os.PathLike, optional
        The study's own folders, where no output may be (default none).
    overwrite_foreign : bool, optional
        Let an output replace an existing file of another format (default False).

    Returns
    -------
    problems : list of str
        Duplicates dropped: a path Snakemake would read as a wildcard (one per folder or
        file name holding it); an output (or its sidecar) that two entries write, that is
        the JSON, or that is an input; an output inside a ``managed`` folder, whose file
        name is too long for the workflow's temp and sidecar files, that is a symbolic link
        or a folder, or where a file of another format exists.
    warnings : list of str
        Outputs whose paths differ only by letter case.
    """
    real = _RealPaths()
    managed = [os.path.realpath(m) for m in managed]
    problems, warnings = [], []
    braced = {}  # a folder or file whose name holds a {wildcard} -> the paths through it
    inputs = {}  # real path -> [(field, description)] of every input that names it
    for t in targets:
        for fld, p in list(t.inputs.items()) + [(t.output_field, t.output)]:
            if p is None:
                continue
            if fld != t.output_field:  # described only when it clashes (a study has many)
                inputs.setdefault(real(p), []).append((fld, t, p))
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

    def described(t, role="output"):
        what = f"{t.where(t.output_field)} {str(t.output)!r}"
        return what if role == "output" else f"the sidecar of {what}"

    for t in targets:
        out = str(t.output)
        r = real(out)
        for p, role in ((r, "output"), (r + ".json", "sidecar")):
            first = written.get(p)
            if first is not None and first != (t, role):
                problems.append(f"{described(t, role)}: is also written as "
                                f"{described(*first)}; two entries cannot write the same file")
            written.setdefault(p, (t, role))
            if p == json_real:
                problems.append(f"{described(t, role)}: is the study's local_data.json itself; "
                                f"refusing to overwrite it")
            elif p in inputs:
                # a b0-mapped atlas is the volume_path its labelings read: that is its purpose
                # and the pkl and npy are what the termination patterns are made of
                clash = [(fld, u, q) for fld, u, q in inputs[p]
                         if not (role == "output" and t.rule == RULE_MAP_B0
                                 and fld == "volume_path")
                         and not (role == "output" and u.rule == RULE_PATTERNS)]
                if clash:
                    fld, u, q = clash[0]
                    problems.append(f"{described(t, role)}: is an input ({u.where(fld)} "
                                    f"{str(q)!r}); refusing to overwrite raw data")
        for m in managed:
            if r == m or r.startswith(m.rstrip("/") + "/"):
                problems.append(f"{described(t)}: is inside the study's own folder {m!r} "
                                f"(QC, provenance, caches, logs, report); outputs go elsewhere")
                break
        name_bytes = len(os.fsencode(os.path.basename(out))) if _usable_name(out) else 0
        extra = _derived_extra(t)
        if name_bytes + extra > NAME_MAX:
            problems.append(f"{described(t)}: its file name is {name_bytes} bytes; the "
                            f"workflow's temp and sidecar files add {extra} to it, and file "
                            f"names are limited to {NAME_MAX} bytes: use a name of at most "
                            f"{NAME_MAX - extra} bytes")
        kind = real.kind(out)
        if kind is None and not overwrite_foreign and real.is_file(out):
            found = foreign_kind(r, t.rule)
            if found:
                problems.append(f"{described(t)}: the existing file there is {found}, not "
                                f"this output's format; refusing to replace it (move it, fix "
                                f"the path, or set overwrite_foreign: true in the config)")
        if kind == "link":
            problems.append(f"{described(t)}: is a symbolic link (to {os.path.realpath(out)!r}); "
                            f"give the real path of the output")
        elif kind == "folder":
            problems.append(f"{described(t)}: is an existing folder, not a file")
        low = r.lower()
        if low in lowered and lowered[low][0] != r:
            warnings.append(f"{described(t)}: differs only by letter case from "
                            f"{described(lowered[low][1])}; on a case-insensitive file system "
                            f"they are one file")
        lowered.setdefault(low, (r, t))
    return _dedupe(problems), warnings
