"""local_data.json (dsi2's format) -> validated scan records with resolved paths.

Validation is done with jsonschema directly (snakemake.utils.validate ignores a
JSON whose top level is a list) and reports every problem at once, each naming
the scan's index and scan_id, the field and what was expected.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import LtpaError

# fields that name files: never part of the metadata a pkl carries
PATH_FIELDS = ("trk_file", "pkl_path", "pkl_trk_path", "fib_file", "reference_volume")
NOT_METADATA = PATH_FIELDS + ("track_labels", "track_scalars")
LABEL_PATH_FIELDS = ("graphml_path", "numpy_path", "volume_path", "qsdr_volume_path",
                     "b0_volume_path", "labels_path")


@dataclass
class LabelRecord:
    """One ``track_labels`` entry of a scan, with its paths resolved (absolute).

    Attributes
    ----------
    position : int
        Its index in the scan's ``track_labels``.
    name : str or None
        The atlas's name.
    parameters : dict or None
        The atlas's parameters, as the JSON gives them.
    numpy_path : pathlib.Path
        The connection-ids .npy to make.
    volume_path : pathlib.Path or None
        The atlas volume (``volume_path``, or its old name ``qsdr_volume_path``).
    graphml_path : pathlib.Path or None
        The region list as graphml.
    labels_path : pathlib.Path or None
        The region list as a label table, instead of graphml.
    b0_volume_path : pathlib.Path or None
        The atlas in b0 space, from which ``volume_path`` is made.
    """

    position: int  # index in the scan's track_labels
    name: str | None
    parameters: dict | None
    numpy_path: Path
    volume_path: Path | None  # volume_path, or its old name qsdr_volume_path
    graphml_path: Path | None
    labels_path: Path | None = None  # region list from a label table instead of graphml
    b0_volume_path: Path | None = None  # atlas in b0 space: volume_path is made from it


@dataclass
class ScalarRecord:
    """One ``track_scalars`` entry of a scan, with its paths resolved (absolute).

    Attributes
    ----------
    position : int
        Its index in the scan's ``track_scalars``.
    name : str or None
        The scalar's name.
    txt_path : pathlib.Path or None
        The per-streamline values (one line per streamline).
    numpy_path : pathlib.Path
        The .npy of per-streamline means to make.
    """

    position: int  # index in the scan's track_scalars
    name: str | None
    txt_path: Path | None
    numpy_path: Path


@dataclass
class ScanRecord:
    """One scan of a local_data.json, with its paths resolved (absolute) and its entries.

    Attributes
    ----------
    index : int
        Its position in the JSON list.
    scan_id : str
        The scan's id.
    scan_group : str
        The scan's group, as the JSON gives it.
    space : str
        The streamlines' declared space (``trk_space``, default "qsdr").
    trk_file : pathlib.Path or None
        The streamline file.
    pkl_path : pathlib.Path or None
        The track dataset (pkl) to make.
    pkl_trk_path : pathlib.Path or None
        The key-grid .trk to make.
    labels : list of LabelRecord
        Its ``track_labels`` entries that name a ``numpy_path``.
    metadata : dict
        Every field of the entry except the paths, ``track_labels`` and ``track_scalars``:
        what the pkl carries.
    fib_file : pathlib.Path or None
        The fib file (needed to map a b0-space atlas).
    reference_volume : pathlib.Path or None
        The NIfTI that gives a native-space .tck or .trx its grid.
    scalars : list of ScalarRecord
        Its ``track_scalars`` entries that name a ``numpy_path``.
    """

    index: int  # position in the JSON list
    scan_id: str
    scan_group: str
    space: str
    trk_file: Path | None
    pkl_path: Path | None
    pkl_trk_path: Path | None
    labels: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    fib_file: Path | None = None
    reference_volume: Path | None = None
    scalars: list = field(default_factory=list)

    def where(self, fld=None) -> str:
        """``scan #3 ('s1')``, with ``, field 'trk_file'`` when ``fld`` is given: where a
        problem is, for its message.

        Parameters
        ----------
        fld : str, optional
            The field, as a JSON path within the scan entry (e.g.
            ``track_labels[1].volume_path``); None or empty: the scan alone.

        Returns
        -------
        str
            E.g. ``scan #3 ('s1'), field 'trk_file'``.
        """
        text = f"scan #{self.index} ({self.scan_id!r})"
        return f"{text}, field {fld!r}" if fld else text


def schema() -> dict:
    """The JSON Schema of local_data.json (``schemas/local_data.schema.json``, read at each
    call).

    Returns
    -------
    dict
        The parsed schema; one scan entry is ``$defs.scan``.
    """
    with resources.files("ltpa").joinpath("schemas/local_data.schema.json").open() as fh:
        return json.load(fh)


def _scan_validator():
    """A validator of one scan entry, with the schema's ``#/$defs/...`` references written
    out in place: the same rules, without a reference lookup per field (3x faster at 10,000
    scans, which ``ltpa init`` and a first dry run validate in full)."""
    from jsonschema import Draft202012Validator

    defs = schema()["$defs"]

    def inline(node, depth=0):
        if depth > 20:
            raise RecursionError("local_data schema: $refs nested too deep")
        if isinstance(node, list):
            return [inline(v, depth) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: inline(v, depth) for k, v in node.items() if k != "$ref"}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            return {**inline(defs[ref[8:]], depth + 1), **out}
        if ref is not None:
            out["$ref"] = ref
        return out

    return Draft202012Validator(inline(defs["scan"]))


def read_json(path) -> object:
    """The JSON value in a local_data file, read as UTF-8 text.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    object
        The parsed value; its shape (a list of scans) is not checked here (``validate``).

    Raises
    ------
    LtpaError
        If the file does not exist or cannot be read, is not UTF-8 or not valid JSON, holds
        a number Python's int cannot take, or is nested more than ``MAX_DEPTH`` (64) levels
        deep; the message names the file (and the nested value's path).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LtpaError(f"local_data file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise LtpaError(f"local_data file {str(path)!r} is not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise LtpaError(f"local_data file {str(path)!r} could not be read: {exc.strerror}") \
            from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise LtpaError(f"local_data file {str(path)!r} is nested more than Python's JSON "
                        f"reader can follow; expected a list of scan objects") from None
    except json.JSONDecodeError as exc:
        raise LtpaError(
            f"local_data file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    except ValueError as exc:  # a number of more than 4300 digits (Python's int limit)
        raise LtpaError(f"local_data file {str(path)!r} could not be read as JSON: "
                        f"{str(exc).split(';')[0]}; expected a list of scan objects") from None
    deepest = _depth_over(data, MAX_DEPTH)
    if deepest:
        raise LtpaError(f"local_data file {str(path)!r}: {deepest} is nested more than "
                        f"{MAX_DEPTH} levels deep; expected scan objects with plain metadata")
    return data


MAX_DEPTH = 64


def _depth_over(data, limit) -> str | None:
    """The JSON path of a value nested deeper than ``limit`` (iterative: no recursion), or None.

    The common case (no such value) walks with depths only; the paths are spelled out in a
    second walk when there is one to name.
    """
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return _deep_path(data, limit)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None


def _deep_path(data, limit) -> str:
    stack = [(data, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > limit:
            return where or "the top level"
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k))
                         for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
    return "the top level"


def _json_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validate(data, source="local_data.json", cache=None) -> list[str]:
    """All schema problems, as messages naming scan index, scan_id, field and expectation.

    ``cache``: a set of sha256 of scan entries already found valid (the study's cache), so
    a study of thousands of scans validates only the entries that changed.

    Parameters
    ----------
    data : object
        The parsed local_data JSON (``read_json``).
    source : str, optional
        What the messages call the file (default "local_data.json").
    cache : set of str, optional
        sha256 hex digests of scan entries (as canonical JSON) found valid before: they are
        skipped, and the digests of entries found valid now are added (the set is updated
        in place). None: the whole list is validated against the schema.

    Returns
    -------
    list of str
        The problems, sorted by where they are; empty when the data is valid. A top level
        that is not a list, or an empty list, gives one problem.
    """
    from jsonschema import Draft202012Validator

    if not isinstance(data, list):
        kind = "object" if isinstance(data, dict) else type(data).__name__
        return [f"{source}: the top level is a JSON {kind}; "
                f"expected a list of scan objects (dsi2's format)"]
    if not data:
        return [f"{source}: the list of scans is empty; expected at least one scan"]
    validator = Draft202012Validator(schema())
    problems = []
    if cache is not None:
        import hashlib

        item = _scan_validator()
        errors = []
        for i, scan in enumerate(data):
            digest = hashlib.sha256(json.dumps(scan, sort_keys=True).encode()).hexdigest()
            if digest in cache:
                continue
            found = list(item.iter_errors(scan))
            for err in found:
                err.path.appendleft(i)  # as if the whole list had been validated
            errors += found
            if not found:
                cache.add(digest)
    else:
        errors = list(validator.iter_errors(data))
    for err in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(err.absolute_path)
        if not path:
            problems.append(f"{source}: {err.message}")
            continue
        idx = path[0]
        scan = data[idx] if isinstance(data[idx], dict) else {}
        sid = scan.get("scan_id")
        fld = _json_path(path[1:]) or "(the scan entry)"
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            fld = _json_path(path[1:] + [missing])
            msg = "is required"
        elif err.validator == "type":
            msg = f"is {json.dumps(err.instance)[:60]}; expected {_types(err.validator_value)}"
        elif err.validator == "enum":
            choices = ", ".join(map(json.dumps, err.validator_value))
            msg = f"is {json.dumps(err.instance)[:60]}; expected one of {choices}"
        else:
            msg = err.message
        problems.append(f"scan #{idx} ({sid!r}), field {fld!r}: {msg}")
    return problems


_TYPE_NAMES = {"string": "a string", "object": "an object", "array": "a list", "number": "a number",
               "integer": "an integer", "null": "null", "boolean": "true/false"}


def _types(value) -> str:
    """'a string or null' for a JSON Schema type (or list of types)."""
    vals = value if isinstance(value, list) else [value]
    return " or ".join(_TYPE_NAMES.get(v, v) for v in vals)


def _usable(value) -> bool:
    if "\x00" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeError:
        return False
    return True


def _unusable_paths(raw, idx) -> list[str]:
    """Path fields that no file system can take (a NUL byte, a lone surrogate)."""
    where = f"scan #{idx} ({raw.get('scan_id')!r})"
    out = []
    for key in PATH_FIELDS:
        v = raw.get(key)
        if isinstance(v, str) and not _usable(v):
            out.append(f"{where}, field {key!r}: is not a usable path (a NUL byte or an invalid "
                       f"character)")
    for kind, keys in (("track_labels", LABEL_PATH_FIELDS), ("track_scalars",
                                                             ("txt_path", "numpy_path"))):
        entries = raw.get(kind)
        for pos, entry in enumerate(entries if isinstance(entries, list) else []):
            for key in keys:
                v = entry.get(key) if isinstance(entry, dict) else None
                if isinstance(v, str) and not _usable(v):
                    out.append(f"{where}, field '{kind}[{pos}].{key}': is not a usable path (a "
                               f"NUL byte or an invalid character)")
    return out


def _makes_any(raw, root, only) -> bool:
    """Whether the scan entry names one of the outputs ``only`` (a remote job's targets)."""
    values = [raw.get("pkl_path"), raw.get("pkl_trk_path")]
    for kind, keys in (("track_labels", ("numpy_path", "volume_path", "qsdr_volume_path")),
                       ("track_scalars", ("numpy_path",))):
        entries = raw.get(kind)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                values += [entry.get(k) for k in keys]
    return any(str(p) in only for p in (_resolve(v, root) for v in values) if p is not None)


def _resolve(value, root: Path) -> Path | None:
    if not isinstance(value, str) or not value or not _usable(value):
        return None  # absent, or of a wrong type that the schema check reports
    text = os.path.expanduser(value) if value.startswith("~") else value
    if not text.startswith("/"):
        text = os.path.join(str(root), text)
    return Path(os.path.normpath(text))


def load_local_data(path, data_root=None) -> list[ScanRecord]:
    """Read, validate and resolve local_data.json; raises LtpaError listing every problem.

    Parameters
    ----------
    path : str or os.PathLike
        The local_data file.
    data_root : str or os.PathLike, optional
        The folder relative paths are resolved against (default: the file's folder).

    Returns
    -------
    list of ScanRecord
        One record per scan entry with a scan_id, in file order, paths absolute.

    Raises
    ------
    LtpaError
        If the file cannot be read or parsed (``read_json``), or has any problem
        (``read_records``): one message listing every problem (``problem_text``), with the
        did-you-mean hints for unknown field names.
    """
    path = Path(path).resolve()
    scans, problems, hints = read_records(path, data_root)
    if problems:
        raise LtpaError(problem_text(path, with_hints(problems, hints)))
    return scans


def known_fields() -> dict:
    """The field names the schema knows: {"scan": [...], "track_labels": [...], ...}.

    Returns
    -------
    dict
        "scan", "track_labels" and "track_scalars" -> list of the field names (str) the
        schema defines for a scan entry, a track_labels entry and a track_scalars entry.
    """
    defs = schema()["$defs"]
    return {"scan": list(defs["scan"]["properties"]),
            "track_labels": list(defs["track_label"]["properties"]),
            "track_scalars": list(defs["track_scalar"]["properties"])}


def field_name_problems(data, strict=False) -> list[str]:
    """An unknown key that is close to a known field, as dsi2 would have kept it: a typo.

    ``trk_spce`` kept as metadata means the default space is used, silently; so a key close
    to a known field (difflib ratio >= 0.8) is named with its suggestion. With ``strict``,
    every unknown key is reported. Other unknown keys stay metadata (dsi2 compatibility).

    Parameters
    ----------
    data : object
        The parsed local_data JSON; what is not a list of scan objects (or, within a scan,
        a list of entry objects) is skipped.
    strict : bool, optional
        Report every unknown key, not only those close to a known field (config
        ``strict_fields``; default False).

    Returns
    -------
    list of str
        One message per key, naming the scan (and entry), the key and the suggestion.
    """
    import difflib

    known = known_fields()
    out = []

    def check(entry, kind, where):
        for key in entry:
            if key in known[kind] or not isinstance(key, str):
                continue
            close = difflib.get_close_matches(key, known[kind], n=1, cutoff=0.8)
            if close:
                out.append(f"{where}: unknown field {key!r}: did you mean {close[0]!r}?")
            elif strict:
                out.append(f"{where}: unknown field {key!r} (strict_fields is on)")

    for idx, scan in enumerate(data if isinstance(data, list) else []):
        if not isinstance(scan, dict):
            continue
        where = f"scan #{idx} ({scan.get('scan_id')!r})"
        check(scan, "scan", where)
        for kind in ("track_labels", "track_scalars"):
            entries = scan.get(kind)
            for pos, entry in enumerate(entries if isinstance(entries, list) else []):
                if isinstance(entry, dict):
                    check(entry, kind, f"{where}, {kind}[{pos}]")
    return out


def read_records(path, data_root=None, strict_fields=False, valid_cache=None, only=None):
    """(scan records, problems, warnings) of a local_data.json (schema, records, field names).

    Only an unreadable file, or a top level that is not a non-empty list of scans, raises:
    anything else is returned as a problem, with as many records as could be made, so that
    the caller can add the study-wide checks to one report.

    Parameters
    ----------
    path : str or os.PathLike
        The local_data file.
    data_root : str or os.PathLike, optional
        The folder relative paths are resolved against (default: the file's folder); a
        leading ``~`` is expanded.
    strict_fields : bool, optional
        Every unknown field is a problem (default False: a key close to a known field is a
        warning, other unknown keys are metadata).
    valid_cache : set of str, optional
        Digests of scan entries known valid, passed to ``validate`` (and updated by it).
    only : collection of str, optional
        Output paths (absolute, as str): read only the scans that make one of them and skip
        the schema check (a cluster job's outputs, ``ltpa.jobs.remote``). None: every scan.

    Returns
    -------
    scans : list of ScanRecord
        The records that could be made, in file order.
    problems : list of str
        Every problem found, each naming the scan, the field and what was expected.
    warnings : list of str
        The did-you-mean hints for unknown field names (empty with ``strict_fields``, where
        they are problems).

    Raises
    ------
    LtpaError
        If the file cannot be read or parsed (``read_json``), or its top level is not a
        non-empty list.
    """
    path = Path(path).resolve()
    data = read_json(path)
    problems = [] if only is not None else validate(data, source=str(path), cache=valid_cache)
    if not isinstance(data, list) or not data:
        raise LtpaError(problem_text(path, problems))
    # the checks below run on whatever parts are well-typed, so one report has everything
    root = Path(data_root).resolve() if data_root else path.parent
    scans = []
    seen_ids = {}
    for idx, raw in enumerate(data):
        if not isinstance(raw, dict):
            continue
        scan_id = raw.get("scan_id")
        if not isinstance(scan_id, str) or not scan_id:
            continue  # the schema check names it
        problems += _unusable_paths(raw, idx)
        if only is not None and not _makes_any(raw, root, only):
            continue
        rec = ScanRecord(
            index=idx,
            scan_id=scan_id,
            scan_group=raw.get("scan_group"),
            space=raw.get("trk_space") or "qsdr",
            trk_file=_resolve(raw.get("trk_file"), root),
            pkl_path=_resolve(raw.get("pkl_path"), root),
            pkl_trk_path=_resolve(raw.get("pkl_trk_path"), root),
            metadata={k: v for k, v in raw.items() if k not in NOT_METADATA},
            fib_file=_resolve(raw.get("fib_file"), root),
            reference_volume=_resolve(raw.get("reference_volume"), root),
        )
        if "{" in scan_id or "}" in scan_id:
            problems.append(f"{rec.where('scan_id')}: {scan_id!r} contains a brace; Snakemake "
                            f"reads braces in file names as wildcards: rename the scan")
        if isinstance(scan_id, str) and scan_id in seen_ids:
            problems.append(f"{rec.where('scan_id')}: duplicate of scan #{seen_ids[scan_id]}; "
                            f"scan_id must be unique")
        elif isinstance(scan_id, str):
            seen_ids[scan_id] = idx
        labels = raw.get("track_labels") if isinstance(raw.get("track_labels"), list) else []
        for pos, lab in enumerate(labels):
            if not isinstance(lab, dict):
                continue
            fld = f"track_labels[{pos}]"
            npy = _resolve(lab.get("numpy_path"), root)
            vol = _resolve(lab.get("volume_path"), root)
            old_vol = _resolve(lab.get("qsdr_volume_path"), root)
            if vol is not None and old_vol is not None and vol != old_vol:
                problems.append(f"{rec.where(fld + '.qsdr_volume_path')}: names {str(old_vol)!r} "
                                f"but volume_path names {str(vol)!r}; give one of them")
            vol = vol or old_vol
            gml = _resolve(lab.get("graphml_path"), root)
            table = _resolve(lab.get("labels_path"), root)
            b0 = _resolve(lab.get("b0_volume_path"), root)
            if npy is None:
                continue  # nothing to build for this entry
            if vol is None:
                what = ("where to write the QSDR atlas mapped from b0_volume_path" if b0 else
                        f"to build numpy_path {str(npy)!r} (the atlas NIfTI in the trk's grid)")
                problems.append(f"{rec.where(fld + '.volume_path')}: is required: {what}")
            if gml is not None and table is not None:
                problems.append(f"{rec.where(fld + '.labels_path')}: graphml_path is given too; "
                                f"give one region list")
            if b0 is not None and rec.fib_file is None:
                problems.append(f"{rec.where('fib_file')}: is required to map "
                                f"{fld}.b0_volume_path {str(b0)!r} to QSDR space")
            rec.labels.append(LabelRecord(pos, lab.get("name"), lab.get("parameters"), npy, vol,
                                          gml, labels_path=table, b0_volume_path=b0))
        scalars = raw.get("track_scalars") if isinstance(raw.get("track_scalars"), list) else []
        for pos, sc in enumerate(scalars):
            if not isinstance(sc, dict):
                continue
            npy = _resolve(sc.get("numpy_path"), root)
            if npy is None:
                continue
            txt = _resolve(sc.get("txt_path"), root)
            if txt is None:
                problems.append(f"{rec.where(f'track_scalars[{pos}].txt_path')}: is required: "
                                f"to build numpy_path {str(npy)!r} (the per-point scalars)")
            rec.scalars.append(ScalarRecord(pos, sc.get("name"), txt, npy))
        if raw.get("trk_file") is None:  # a value of a wrong type is reported already
            problems += _required_inputs(rec)
        # a volume_path made from a b0 atlas: one job even if several entries share it
        mapped = {}
        for lab in rec.labels:
            if lab.b0_volume_path is None or lab.volume_path is None:
                continue
            first = mapped.setdefault(lab.volume_path, lab.b0_volume_path)
            if first != lab.b0_volume_path:
                problems.append(f"{rec.where(f'track_labels[{lab.position}].volume_path')}: "
                                f"{str(lab.volume_path)!r} would be made from two different b0 "
                                f"atlases ({str(first)!r} and {str(lab.b0_volume_path)!r})")
        scans.append(rec)
    names = field_name_problems(data, strict=strict_fields)
    if strict_fields:
        return scans, problems + names, []
    return scans, problems, names


def _required_inputs(rec) -> list[str]:
    """The streamline file is needed by every output of a scan: required when it names one."""
    if rec.trk_file is not None:
        return []
    needs = [("pkl_path", rec.pkl_path), ("pkl_trk_path", rec.pkl_trk_path)]
    needs += [(f"track_labels[{lab.position}].numpy_path", lab.numpy_path)
              for lab in rec.labels]
    needs += [(f"track_scalars[{sc.position}].numpy_path", sc.numpy_path) for sc in rec.scalars]
    named = [(fld, p) for fld, p in needs if p is not None]
    if not named:
        return []
    fld, p = named[0]
    more = f" (and {len(named) - 1} more outputs)" if len(named) > 1 else ""
    return [f"{rec.where('trk_file')}: is required: to build {fld} {str(p)!r}{more}"]


def problem_scan(text: str) -> int | None:
    """The index of the scan a problem message names first (``scan #N (...)``), else None.

    Parameters
    ----------
    text : str
        A problem message.

    Returns
    -------
    int or None
        N when the message starts with ``scan #N ``; else None.
    """
    import re

    m = re.match(r"scan #(\d+) ", text)
    return int(m.group(1)) if m else None


def with_hints(problems, hints) -> list[str]:
    """``problems`` with each of ``hints`` (did-you-mean lines) placed after the last problem
    of its scan, or at the end when its scan has none.

    A misspelt key is often the cause of another problem (``trk_fiel``: trk_file is
    required; ``trk_spce``: the default space's grid does not fit), so once anything is
    wrong the hints belong in the same listing.

    Parameters
    ----------
    problems : list of str
        The problem messages.
    hints : list of str
        The did-you-mean messages (``field_name_problems``).

    Returns
    -------
    list of str
        A new list: the problems with the hints placed among them; empty when there are no
        problems (the hints alone are not listed).
    """
    if not problems:
        return []
    out = list(problems)
    for hint in hints:
        idx = problem_scan(hint)
        at = max((i for i, p in enumerate(out) if problem_scan(p) == idx), default=None)
        if at is None:
            out.append(hint)
        else:
            out.insert(at + 1, hint)
    return out


def problem_text(path, problems) -> str:
    """The report of a local_data file's problems: a head line naming the file and the count,
    then one ``  - problem`` line each.

    Parameters
    ----------
    path : str or os.PathLike
        The local_data file.
    problems : list of str
        The problem messages.

    Returns
    -------
    str
    """
    plural = "s" if len(problems) > 1 else ""
    head = f"local_data file {str(path)!r}: {len(problems)} problem{plural}:"
    return "\n".join([head] + [f"  - {p}" for p in problems])
