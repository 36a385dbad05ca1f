"""``ltpa init``: a study's local_data.json from a lab's folders (BIDS derivatives, DSI Studio).

A spec (YAML, ``schemas/init.schema.yaml``) names the streamline files by templates with
Snakemake's wildcards, the atlases, the participants table and where outputs go. Each file
that matches a ``tracks`` template (Snakemake's own ``glob_wildcards``) is a scan:

- ``scan_id`` joins its wildcards, BIDS-style (``{subject}`` -> ``sub-``, ``{session}`` ->
  ``ses-``, any other ``{name}`` -> ``name-``): ``sub-01_ses-1``;
- ``subject_id`` is ``sub-{subject}``, so a subject's sessions are repeat scans;
- ``scan_group`` and ``attributes`` come from the subject's row of the participants table;
- the spec's ``metadata`` is copied into every entry;
- outputs go to ``<outputs>/<scan_id>/``, never into ROOT.

Everything that would make a wrong study is reported at once before anything is written
(a scan without an atlas volume, a tracks file without a participants row, two tracks files
for one scan, a participant without a scan), and the result must pass the same checks as
``ltpa validate`` (``ltpa.study.study.load_study``). Run again on the same JSON, it adds the scans
that are new and keeps every existing entry as it is (hand edits included); the previous file
is kept as ``<json>.<UTC time>.bak`` (a new name each time: no earlier backup, nor any
other file, is replaced) and the new one written atomically.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import InputError, LtpaError
from ..formats.regions import is_graphml
from ..io import atomic_path
from .config import with_defaults
from .localdata import read_json
from .study import load_study, study_work_dir

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "init.schema.yaml"
# BIDS entity of a wildcard, for scan_id; any other wildcard is written as its own name
ENTITIES = {"subject": "sub", "session": "ses", "acquisition": "acq", "run": "run"}
MISSING_CELLS = ("", "n/a", "na", "nan")


@lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of an ``ltpa init`` spec, read once from ``schemas/init.schema.yaml``.

    Returns
    -------
    dict
        The parsed schema: every key under ``properties``, with its default where it has
        one. Cached: each call returns the same dict, so callers must not change it.
    """
    import yaml

    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "spec"


def _error_lines(spec: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    lines = []
    for err in sorted(validator.iter_errors(spec), key=lambda e: [str(p) for p in e.path]):
        where = _key_path(err.path)
        if err.validator == "additionalProperties":
            known = list((err.schema.get("properties") or {}).keys())
            extra = sorted(set(err.instance) - set(known))
            for key in extra:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; known keys: {', '.join(known)}"
                lines.append(f"{_key_path([*err.path, key])}: unknown key{hint}")
        elif "propertyNames" in err.schema_path:
            lines.append(f"{where}.{err.instance}: set by ltpa init itself, not by metadata")
        elif err.validator == "oneOf" and err.path and err.path[-1] == "tracks":
            lines.append(f"{where}: expected a template (a string) or a list of templates, "
                         f"not {json.dumps(err.instance)[:80]}")
        else:
            lines.append(f"{where}: {err.message}")
    return lines


def check_spec(spec, source="spec") -> dict:
    """The spec with the schema's defaults filled in; LtpaError naming every bad key.

    Parameters
    ----------
    spec : object
        The spec as read (:func:`read_spec`) or built; a dict to be valid.
    source : str, optional
        What the messages name, e.g. ``"spec file 'init.yaml'"``; default ``"spec"``.

    Returns
    -------
    dict
        A shallow copy of ``spec`` with the schema's defaults for the keys it does not
        give, ``tracks`` made a list when it is one template, and ``atlases`` ([]) and
        ``metadata`` ({}) when absent.

    Raises
    ------
    InputError
        If ``spec`` is not a dict, or does not pass the schema: the message lists every
        problem, one per line (an unknown key with the closest known one, a wrong type, a
        metadata key that ltpa init sets itself, ...).
    """
    if not isinstance(spec, dict):
        raise InputError(f"{source}: expected a mapping of keys (tracks, atlases, ...), not "
                         f"{type(spec).__name__}")
    lines = _error_lines(spec)
    if lines:
        raise InputError(f"{source} is not a valid ltpa init spec (keys: docs/start.md):\n  "
                         + "\n  ".join(lines))
    out = dict(spec)
    for key, prop in schema()["properties"].items():
        if "default" in prop:
            out.setdefault(key, prop["default"])
    if isinstance(out["tracks"], str):
        out["tracks"] = [out["tracks"]]
    out.setdefault("atlases", [])
    out.setdefault("metadata", {})
    return out


def read_spec(path) -> dict:
    """The spec in the YAML file ``path`` as read ({} for an empty file); not yet checked:
    :func:`merged_spec` checks it (:func:`check_spec`).

    Parameters
    ----------
    path : str or os.PathLike
        The spec file (YAML, UTF-8).

    Returns
    -------
    object
        What the YAML holds (a dict for a usable spec; any other value is refused by
        :func:`check_spec`); {} when it holds nothing (or null).

    Raises
    ------
    InputError
        If the file cannot be read (an OSError) or is not valid YAML.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            spec = yaml.safe_load(fh)
    except OSError as exc:
        raise InputError(f"spec file {str(path)!r} could not be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"spec file {str(path)!r} is not valid YAML ({exc})") from None
    return spec if spec is not None else {}


# --------------------------------------------------------------------------- templates

_WILDCARD = re.compile(r"\{\s*([A-Za-z_]\w*)\s*(,[^{}]*(\{[^{}]*\}[^{}]*)*)?\}")


def wildcards_of(template: str) -> list[str]:
    """The wildcard names of a template, in order of first appearance.

    Parameters
    ----------
    template : str
        A path template with Snakemake wildcards: ``{name}`` or ``{name,constraint}``.

    Returns
    -------
    list of str
        The names, each once.
    """
    names = []
    for m in _WILDCARD.finditer(template):
        if m.group(1) not in names:
            names.append(m.group(1))
    return names


def fill(template: str, values: dict) -> str:
    """The template with its wildcards (constraints dropped) replaced by ``values``.

    Parameters
    ----------
    template : str
        A path template (:func:`wildcards_of`).
    values : dict
        The str value of each wildcard name; every wildcard of ``template`` must have one
        (else KeyError).

    Returns
    -------
    str
        The filled-in template.
    """
    return _WILDCARD.sub(lambda m: values[m.group(1)], template)


def _label(name: str, value: str) -> str:
    prefix = ENTITIES.get(name, name)
    return value if value.startswith(f"{prefix}-") else f"{prefix}-{value}"


def scan_id_of(names, values) -> str:
    """``sub-01_ses-1`` from the wildcards ``subject=01``, ``session=1``.

    Parameters
    ----------
    names : sequence of str
        The wildcard names, in the order of the id (:func:`wildcards_of`).
    values : dict
        The str value of each name.

    Returns
    -------
    str
        Each wildcard as ``<entity>-<value>`` (``ENTITIES``: subject -> sub, session ->
        ses, acquisition -> acq, run -> run; any other name is its own entity; a value
        that already starts with ``<entity>-`` is kept as it is), joined with ``_``.
    """
    return "_".join(_label(n, values[n]) for n in names)


def _match(root: Path, templates: list[str]):
    """{wildcard values (tuple): [(template index, file)]} of every file matching a template,
    found with Snakemake's own ``glob_wildcards`` (one walk of the tree per template)."""
    from snakemake.io import glob_wildcards

    names = wildcards_of(templates[0])
    found = {}
    for i, template in enumerate(templates):
        pattern = os.path.join(str(root), template)
        wc = glob_wildcards(pattern, followlinks=True)
        columns = [getattr(wc, n) for n in names]
        for values in zip(*columns):
            values = tuple(values)
            path = fill(template, dict(zip(names, values)))
            found.setdefault(values, []).append((i, path))
    return names, found


# --------------------------------------------------------------------------- participants

def _typed(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if value == value and abs(value) != float("inf") else text


def read_participants(path: Path, id_column: str, group_column: str, space_column=None):
    """{participant_id: (line, row)} of a BIDS participants.tsv; LtpaError naming the file
    and the key whose column is missing.

    Parameters
    ----------
    path : pathlib.Path
        The participants file: tab-separated, UTF-8 (a byte order mark is skipped), with a
        header row.
    id_column : str
        The column of the participant ids (spec key ``participant_column``).
    group_column : str
        The column of the scan groups (spec key ``group_column``); only checked to exist.
    space_column : str, optional
        The column of the trk spaces (spec key ``space_column``); only checked to exist.
        None (default): none.

    Returns
    -------
    dict
        ``sub-<id>`` (an id already starting with ``sub-`` is kept) -> (line, row): the
        line number (the first data row is line 2) and {column: cell}, header and cells
        stripped. Blank lines are skipped.

    Raises
    ------
    InputError
        If the file cannot be read or is empty, a column given is not in its header, a row
        has no participant id, or a participant is on two lines.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except OSError as exc:
        raise InputError(f"participants: file {str(path)!r} could not be read: "
                         f"{exc.strerror}") from None
    if not rows:
        raise InputError(f"participants: file {str(path)!r} is empty; expected a header row")
    header = [c.strip() for c in rows[0]]
    for key, column in (("participant_column", id_column), ("group_column", group_column),
                        ("space_column", space_column)):
        if column is not None and column not in header:
            raise InputError(f"{key}: column {column!r} is not in participants file "
                             f"{str(path)!r} (its columns: {', '.join(header)})")
    out = {}
    for lineno, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        row = dict(zip(header, (c.strip() for c in cells)))
        pid = row.get(id_column, "")
        if not pid:
            raise InputError(f"participants file {str(path)!r} line {lineno}: no "
                             f"{id_column}")
        pid = _label("subject", pid)
        if pid in out:
            raise InputError(f"participants file {str(path)!r} line {lineno}: {pid} is also "
                             f"on line {out[pid][0]}")
        out[pid] = (lineno, row)
    return out


# --------------------------------------------------------------------------- the scans

@dataclass
class Candidate:
    """A scan found under the root: its entry for the local_data.json and what is wrong with it.

    Attributes
    ----------
    scan_id : str
        The scan's id, from its tracks file's wildcards (``sub-01_ses-1``).
    subject_id : str
        ``sub-<subject>``, or the scan_id when the templates have no ``{subject}``.
    entry : dict
        The scan's entry as it would be written (paths relative to the JSON's folder when
        inside it).
    problems : list of str
        What keeps it out of the study (a missing atlas volume, no participants row, ...),
        each naming the file and the subject; empty when there is none.
    twin : str or None
        The problem "two tracks files for this scan" (also in ``problems``), naming both
        files: the one problem also reported for a scan the local_data.json already has.
    """

    scan_id: str
    subject_id: str
    entry: dict
    problems: list = field(default_factory=list)
    twin: str | None = None


@dataclass
class InitResult:
    """What ``init_study`` did to a local_data.json.

    Attributes
    ----------
    path : pathlib.Path
        The local_data.json (absolute).
    added : list of str
        The scan_ids of the entries added.
    unchanged : list of str
        The scan_ids found that the file already had (by scan_id or tracks file).
    gone : list of str
        The scan_ids of entries of the file that no tracks file matches now (kept as they are).
    left_out : list of str
        The scan_ids of scans with problems that ``allow_missing`` left out.
    warnings : list of str
        The problems of the scans left out, participants without a scan (with
        ``allow_missing``) and the study check's warnings.
    written : bool
        Whether the file was written.
    backup : pathlib.Path or None
        Where the previous file was kept, when there was one and the file was written.
    n_scans : int
        The number of entries in the file (kept and added).
    """

    path: Path
    added: list = field(default_factory=list)  # scan_ids
    unchanged: list = field(default_factory=list)
    gone: list = field(default_factory=list)  # entries of the JSON no file matches now
    left_out: list = field(default_factory=list)  # scans with problems (allow_missing)
    warnings: list = field(default_factory=list)
    written: bool = False
    backup: Path | None = None
    n_scans: int = 0

    def report(self) -> str:
        """The result in words: the counts, the scans added, gone and left out (the first 20
        of each), and whether the file was written and where the backup is.

        Returns
        -------
        str
            Lines without a final newline: ``"<path>: N added, N unchanged, N gone[, N left
            out]; N scans in all"``, an indented line for each of added, gone and left out
            that is not empty (``" and N more"`` past 20), and "nothing new: the file was
            left as it was" when it was not written, or where the previous file is kept.
        """
        lines = [f"{self.path}: {len(self.added)} added, {len(self.unchanged)} unchanged, "
                 f"{len(self.gone)} gone" + (f", {len(self.left_out)} left out"
                                             if self.left_out else "")
                 + f"; {self.n_scans} scans in all"]
        for what, ids in (("added", self.added), ("gone (kept in the JSON: no file matches "
                                                  "them now)", self.gone),
                          ("left out", self.left_out)):
            if ids:
                shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more"
                                               if len(ids) > 20 else "")
                lines.append(f"  {what}: {shown}")
        if not self.written:
            lines.append("  nothing new: the file was left as it was")
        elif self.backup is not None:
            lines.append(f"  the previous file is kept as {self.backup}")
        return "\n".join(lines)


def _written_path(path, base: str) -> str:
    """``path`` (absolute) as the JSON holds it: relative to the JSON's folder ``base`` when
    inside it (the study folder can then move as a whole), else absolute. String operations:
    pathlib costs seconds at 10,000 scans."""
    path = str(path)
    prefix = base.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else path


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _atlas_key(atlas: dict) -> str:
    params = atlas.get("parameters") or {}
    text = atlas["name"] + "".join(f"_{k}-{v}" for k, v in params.items())
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def _check_templates(spec: dict) -> list[str]:
    names = wildcards_of(spec["tracks"][0])
    lines = []
    if not names:
        lines.append(f"tracks[0]: template {spec['tracks'][0]!r} has no wildcard; expected "
                     f"e.g. sub-{{subject}}/ses-{{session}}/dwi/..._streamlines.trk")
    for i, template in enumerate(spec["tracks"][1:], start=1):
        if set(wildcards_of(template)) != set(names):
            lines.append(f"tracks[{i}]: wildcards {wildcards_of(template)} differ from "
                         f"tracks[0]'s {names}; every tracks template must have the same")
    known = set(names)
    fields = [("reference_volume", spec.get("reference_volume"))]
    for j, atlas in enumerate(spec["atlases"]):
        fields += [(f"atlases[{j}].volume", atlas["volume"]),
                   (f"atlases[{j}].regions", atlas.get("regions"))]
    for key, template in fields:
        if template is None:
            continue
        extra = [n for n in wildcards_of(template) if n not in known]
        if extra:
            lines.append(f"{key}: wildcard(s) {', '.join(extra)} of {template!r} are not in "
                         f"tracks ({', '.join(names) or 'none'}); a scan's files are found "
                         f"from the wildcards of its tracks file")
    keys = {}
    for j, atlas in enumerate(spec["atlases"]):
        key = _atlas_key(atlas)
        if key in keys:
            lines.append(f"atlases[{j}]: same name and parameters as atlases[{keys[key]}] "
                         f"({key}); give each labeling its own parameters")
        keys.setdefault(key, j)
    if spec.get("participants") and "subject" not in known:
        lines.append("participants: the tracks templates need the wildcard {subject} to find "
                     "a scan's row (participant_id = sub-{subject})")
    return lines


def find_scans(root, spec: dict, json_path) -> tuple[list[Candidate], list[str]]:
    """(one Candidate per scan, in sorted order; problems of no scan: participants without a
    scan) for the tree ``root``. Each candidate's ``problems``
    name the file and the subject.

    Parameters
    ----------
    root : str or os.PathLike
        The lab's folder; the spec's templates are relative to it.
    spec : dict
        A checked spec (:func:`check_spec` / :func:`merged_spec`).
    json_path : str or os.PathLike
        The local_data.json to be written: relative ``outputs`` are taken from its folder,
        and the entries' paths inside that folder are written relative to it.

    Returns
    -------
    candidates : list of Candidate
        One per set of wildcard values that a tracks file matches, sorted naturally
        (sub-2 before sub-10).
    orphans : list of str
        One message per participant of the participants file without a scan; [] without
        a participants file.

    Raises
    ------
    InputError
        If the spec cannot be used for ``root`` (listing every reason: a tracks template
        without wildcards or with other wildcards than ``tracks[0]``, a template with a
        wildcard not in tracks, two atlases with the same name and parameters, a
        participants file without ``{subject}``, outputs inside ``root``, a brace in the
        path of ``root``), or as :func:`read_participants`.
    """
    root = Path(os.path.abspath(root))
    base = os.path.dirname(os.path.abspath(json_path))
    outputs = Path(spec["outputs"])
    outputs = Path(os.path.abspath(outputs if outputs.is_absolute() else Path(base) / outputs))
    lines = _check_templates(spec)
    if _inside(Path(os.path.realpath(outputs)), Path(os.path.realpath(root))):
        lines.append(f"outputs: {str(outputs)!r} is inside ROOT {str(root)!r}; the outputs "
                     f"must go elsewhere (ROOT holds the inputs, e.g. BIDS derivatives)")
    if "{" in str(root) or "}" in str(root):
        lines.append(f"ROOT {str(root)!r} has a brace in its path, which Snakemake's "
                     f"wildcard matching reads as a wildcard; rename the folder")
    if lines:
        raise InputError("the ltpa init spec cannot be used:\n  " + "\n  ".join(lines))
    participants = None
    if spec.get("participants"):
        ppath = root / spec["participants"]
        participants = read_participants(ppath, spec["participant_column"],
                                         spec["group_column"], spec.get("space_column"))
    names, found = _match(root, spec["tracks"])
    regions_seen = {}
    keys = [f"{_atlas_key(atlas)}.npy" for atlas in spec["atlases"]]
    candidates = []
    for values in sorted(found, key=lambda v: tuple(_natural(x) for x in v)):
        wc = dict(zip(names, values))
        scan_id = scan_id_of(names, wc)
        subject_id = _label("subject", wc["subject"]) if "subject" in wc else scan_id
        files = found[values]
        problems = []
        twin = None
        if len(files) > 1:
            listed = " and ".join(f"{str(root / f)!r} (tracks[{i}])" for i, f in files)
            twin = (f"scan {scan_id} (subject {subject_id}): two tracks files, {listed}; "
                    f"keep one, or narrow the templates")
            problems.append(twin)
        root_s = str(root)
        trk = os.path.join(root_s, files[0][1])
        entry = {"scan_id": scan_id, "subject_id": subject_id}
        space = spec["space"]
        if participants is not None:
            row = participants.get(subject_id)
            if row is None:
                problems.append(f"file {str(trk)!r}: subject {subject_id} has no row in "
                                f"participants file {str(root / spec['participants'])!r}")
                entry["scan_group"] = None
            else:
                lineno, cells = row
                group = cells.get(spec["group_column"], "")
                if group.lower() in MISSING_CELLS:
                    problems.append(f"file {str(trk)!r}: subject {subject_id} has no "
                                    f"{spec['group_column']} (participants file line "
                                    f"{lineno})")
                entry["scan_group"] = group
                skip = {spec["participant_column"], spec["group_column"],
                        spec.get("space_column")}
                attributes = {k: _typed(v) for k, v in cells.items()
                              if k not in skip and v.lower() not in MISSING_CELLS}
                if attributes:
                    entry["attributes"] = attributes
                if spec.get("space_column"):
                    space = cells.get(spec["space_column"], "")
                    if space not in ("qsdr", "mni", "native"):
                        problems.append(f"file {str(trk)!r}: subject {subject_id}: "
                                        f"{spec['space_column']} is {space!r} (participants "
                                        f"file line {lineno}); expected qsdr, mni or native")
        else:
            entry["scan_group"] = spec["group"]
        entry.update(spec["metadata"])
        entry["trk_space"] = space
        entry["trk_file"] = _written_path(trk, base)
        if spec.get("reference_volume"):
            ref = os.path.join(root_s, fill(spec["reference_volume"], wc))
            if not os.path.exists(ref):
                problems.append(f"scan {scan_id} (subject {subject_id}): reference_volume "
                                f"{str(ref)!r} does not exist")
            entry["reference_volume"] = _written_path(ref, base)
        out_dir = os.path.join(str(outputs), scan_id)
        entry["pkl_path"] = _written_path(os.path.join(out_dir, f"{scan_id}.pkl"), base)
        if spec["pkl_trk"]:
            entry["pkl_trk_path"] = _written_path(os.path.join(out_dir, f"{scan_id}.pkl.trk"),
                                                  base)
        labels = []
        for j, atlas in enumerate(spec["atlases"]):
            label = {"name": atlas["name"]}
            if atlas.get("parameters") is not None:
                label["parameters"] = atlas["parameters"]
            if atlas.get("notes") is not None:
                label["notes"] = atlas["notes"]
            vol = os.path.join(root_s, fill(atlas["volume"], wc))
            if not os.path.exists(vol):
                problems.append(f"scan {scan_id} (subject {subject_id}): atlas "
                                f"{atlas['name']} volume {str(vol)!r} (atlases[{j}].volume) "
                                f"does not exist")
            label["volume_path"] = _written_path(vol, base)
            if atlas.get("regions"):
                reg = os.path.join(root_s, fill(atlas["regions"], wc))
                exists = regions_seen.get(reg)
                if exists is None:
                    exists = regions_seen[reg] = os.path.exists(reg)
                if not exists:
                    problems.append(f"scan {scan_id} (subject {subject_id}): atlas "
                                    f"{atlas['name']} region list {str(reg)!r} "
                                    f"(atlases[{j}].regions) does not exist")
                fld = "graphml_path" if is_graphml(reg) else "labels_path"
                label[fld] = _written_path(reg, base)
            label["numpy_path"] = _written_path(os.path.join(out_dir, keys[j]), base)
            labels.append(label)
        if labels:
            entry["track_labels"] = labels
        candidates.append(Candidate(scan_id, subject_id, entry, problems, twin))
    orphans = []
    if participants is not None:
        with_scan = {c.subject_id for c in candidates}
        for pid, (lineno, _) in participants.items():
            if pid not in with_scan:
                orphans.append(f"participant {pid} (participants file "
                               f"{str(root / spec['participants'])!r} line {lineno}) has no "
                               f"scan: no file matches {' or '.join(spec['tracks'])}")
    return candidates, orphans


def _natural(text: str):
    """Sort key putting sub-2 before sub-10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", text) if p)


# --------------------------------------------------------------------------- init

def merged_spec(spec_path=None, *, tracks=None, participants=None, group_column=None,
                space=None, outputs=None, atlases=None) -> dict:
    """The spec of ``spec_path`` (if any) with the command line's options on top, checked.

    Parameters
    ----------
    spec_path : str or os.PathLike, optional
        The YAML spec (:func:`read_spec`). None (default): the options alone.
    tracks : list of str, optional
        Templates of the streamline files; replace the spec's when given and not empty.
    participants : str, optional
        The participants file; replaces the spec's when not None.
    group_column : str, optional
        The participants file's group column; replaces the spec's when not None.
    space : str, optional
        The trk space of every scan (qsdr, mni or native); replaces the spec's when not
        None.
    outputs : str, optional
        The outputs folder; replaces the spec's when not None.
    atlases : optional
        Not used: the atlases come from the spec file only.

    Returns
    -------
    dict
        The checked spec (:func:`check_spec`). A spec file that does not hold a mapping
        is checked (and refused) without the options.

    Raises
    ------
    InputError
        If the spec file cannot be read or is not YAML, neither it nor ``tracks`` gives
        tracks, or the spec does not pass :func:`check_spec`.
    """
    spec = read_spec(spec_path) if spec_path is not None else {}
    source = f"spec file {str(spec_path)!r}" if spec_path is not None else "the options"
    if not isinstance(spec, dict):
        return check_spec(spec, source)
    for key, value in (("tracks", tracks or None), ("participants", participants),
                       ("group_column", group_column), ("space", space),
                       ("outputs", outputs)):
        if value is not None:
            spec[key] = value
    if "tracks" not in spec:
        raise InputError(f"{source}: no tracks; give --tracks TEMPLATE or a spec with "
                         f"tracks: (e.g. sub-{{subject}}/ses-{{session}}/dwi/"
                         f"sub-{{subject}}_ses-{{session}}_streamlines.tck)")
    return check_spec(spec, source)


def _existing(path: Path) -> list | None:
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{str(path)!r} exists and is not a JSON list of scans; ltpa init "
                         f"adds to a local_data.json, give another -o to start a new one")
    return data


def backup_path(out: Path) -> Path:
    """A free name for the backup of ``out``: ``<name>.<UTC time of now>.bak``, with a
    counter when that exists (two runs in one second), so a backup never replaces a file.

    Only a name is chosen: nothing is created.

    Parameters
    ----------
    out : pathlib.Path
        The file to back up.

    Returns
    -------
    pathlib.Path
        In the folder of ``out``: ``<name>.<YYYYmmddTHHMMSSZ>.bak``, or
        ``<name>.<YYYYmmddTHHMMSSZ>-<n>.bak`` with the first n from 2 that is free (a
        dangling symlink counts as taken).
    """
    import time

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = out.with_name(f"{out.name}.{stamp}.bak")
    n = 1
    while os.path.lexists(candidate):
        n += 1
        candidate = out.with_name(f"{out.name}.{stamp}-{n}.bak")
    return candidate


def init_study(root, spec: dict, out, *, allow_missing=False, config=None,
               check_headers=True, log=None) -> InitResult:
    """Write (or update) the local_data.json ``out`` for the tree ``root`` as ``spec`` says.

    Parameters
    ----------
    root : path
        The lab's folder (e.g. BIDS derivatives); spec paths are relative to it.
    spec : dict
        A checked spec (:func:`merged_spec` / :func:`check_spec`).
    out : path
        The local_data.json to write. If it exists, its entries are kept as they are and
        only scans it does not have are added.
    allow_missing : bool
        Leave scans with a problem out, with a warning, instead of stopping.
    config : dict, optional
        The workflow config the result is validated with (``ltpa.study.config``).
    check_headers : bool
        Also check the inputs' headers (grids, region lists), as ``ltpa validate`` does.
    log : optional
        Not used.

    Returns
    -------
    InitResult
        What was added, unchanged, gone and left out, and whether the file was written.

    Raises
    ------
    LtpaError
        Listing every problem, each naming the file and the subject; nothing is written.
    """
    out = Path(os.path.abspath(out))
    existing = _existing(out)
    candidates, orphans = find_scans(root, spec, out)
    result = InitResult(out)
    old = existing or []
    old_ids = {e.get("scan_id") for e in old if isinstance(e, dict)}
    base = str(out.parent)
    old_trks = {}  # tracks file -> its entry's scan_id
    for e in old:
        if isinstance(e, dict) and isinstance(e.get("trk_file"), str):
            old_trks[os.path.normpath(os.path.join(base, e["trk_file"]))] = e.get("scan_id")
    new, problems = [], []
    matched_ids = set()
    for c in candidates:
        trk = os.path.normpath(os.path.join(base, c.entry["trk_file"]))
        if c.scan_id in old_ids or trk in old_trks:
            matched_ids.add(c.scan_id)
            result.unchanged.append(c.scan_id)
            if c.twin:  # a second tracks file appeared beside a scan the JSON has
                known = c.scan_id if c.scan_id in old_ids else old_trks[trk]
                twin = f"{c.twin}; {out} already lists this scan as {known}"
                if allow_missing:
                    result.warnings.append(f"{twin}: its entry is kept as it is, the other "
                                           f"file ignored (--allow-missing)")
                else:
                    problems.append(f"{twin} (with --allow-missing its entry is kept as it "
                                    f"is and the other file ignored)")
            continue
        if c.problems:
            if allow_missing:
                result.left_out.append(c.scan_id)
                result.warnings += [f"{p}; scan left out (--allow-missing)" for p in c.problems]
                continue
            problems += c.problems
            continue
        new.append(c.entry)
        result.added.append(c.scan_id)
    all_trks = {os.path.normpath(os.path.join(base, c.entry["trk_file"])) for c in candidates}
    for e in old:
        if not isinstance(e, dict):
            continue
        trk = e.get("trk_file")
        trk = os.path.normpath(os.path.join(base, trk)) if isinstance(trk, str) else None
        if e.get("scan_id") not in matched_ids and trk not in all_trks:
            result.gone.append(str(e.get("scan_id")))
    if orphans:
        if allow_missing:
            result.warnings += orphans
        else:
            problems += orphans
    if problems:
        raise InputError(f"ltpa init {root}: {len(problems)} problem(s); nothing was written "
                         f"(--allow-missing leaves such scans out):\n  " + "\n  ".join(problems))
    entries = old + new
    result.n_scans = len(entries)
    if not entries:
        raise InputError(f"ltpa init {root}: no file matches {' or '.join(spec['tracks'])}; "
                         f"nothing was written")
    if existing is not None and not new:
        return result
    config = dict(with_defaults(config))
    config["results_dir"] = str(study_work_dir(out, config))
    text = json.dumps(entries, indent=2, ensure_ascii=False) + "\n"

    def validate(tmp):
        try:
            study = load_study(tmp, config, check_inputs_of_jobs=check_headers)
        except LtpaError as exc:
            msg = str(exc).replace(str(tmp), str(out))
            if result.gone:
                msg += (f"\n(entries of {out.name} that no file matches any more, kept as "
                        f"they are: {', '.join(result.gone)}; restore their files or remove "
                        f"their entries)")
            raise LtpaError(f"the local_data.json ltpa init made does not pass ltpa "
                            f"validate; nothing was written:\n{msg}") from None
        result.warnings += [w.replace(str(tmp), str(out)) for w in study.warnings]

    with atomic_path(out, suffix=".json") as tmp:
        tmp.write_text(text, encoding="utf-8")
        validate(tmp)
        if existing is not None:
            backup = backup_path(out)
            with atomic_path(backup) as btmp:
                shutil.copyfile(out, btmp)
            result.backup = backup
    result.written = True
    return result
