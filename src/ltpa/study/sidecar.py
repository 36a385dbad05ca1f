"""The ``<output>.json`` sidecar: what an output was built from. One module owns the format.

Every output the workflow makes gets a sidecar, written after the output is in place:

    {"sidecar_version": 2, "ltpa_version": ..., "kind": "track_dataset" | "key_trk" |
     "connection_ids" | "qsdr_atlas" | "track_scalars" | "termination_patterns" |
     "study_map" (ltpa.analysis.maps_workflow: a study map, with its top centers),
     "scan_id": ..., "atlas": ...,
     "output": {"path", "size", "mtime_ns", "fingerprint", "sha256"?},  # the file it describes
     "inputs": {field: {"path", "relpath", "size", "mtime_ns", "sha256"?}},
     "params": {...},                                     # what else decides the content
     "stats": {...}, and per kind: "build", "region_ids", "connection_ids_start_at", ...}

``relpath`` is the input's path relative to the output's folder, so a study moved or copied
whole (with its times kept: ``cp -a``, ``rsync -a``) is still up to date; ``sha256`` is kept
for inputs up to ``HASH_MAX_BYTES``, so an unchanged small file that was touched is too;
the output's own ``sha256`` for outputs up to ``OUTPUT_HASH_MAX_BYTES`` (docs/checks.md).

``read`` never raises on a bad sidecar: it returns ``(None, why)`` and the output counts as
out of date; QC, status and the workflow read sidecars only through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DamagedFileError
from ..formats.regions import regions_from_graphml, regions_from_table
from ..io import atomic_open, read_regular
from ..prepared.labels import read_label_volume

SIDECAR_VERSION = 2
MAX_BYTES = 16 << 20  # a sidecar of a scan with a 10^4-region list is ~100 KB
HASH_MAX_BYTES = 1 << 20  # inputs up to 1 MB get a content hash (atlases, graphml, tables)
# outputs up to this size are hashed in full when their sidecar is written, and again when
# their mtime moved (ltpa.study.staleness, cached by file identity); larger ones are compared by
# size and their first and last 4 KB (``fingerprint``). Hashing runs at ~1 GB/s, so a
# study of 1,000 scans with 50 MB pkls pays ~1 min once after a run (Snakemake touches
# every output), then nothing while the outputs stay untouched.
OUTPUT_HASH_MAX_BYTES = 256 << 20
KINDS = ("track_dataset", "key_trk", "connection_ids", "qsdr_atlas", "track_scalars",
         "termination_patterns", "study_map")


def path_of(output) -> Path:
    """The sidecar's path of ``output``: its path with ``.json`` appended.

    Parameters
    ----------
    output : str or os.PathLike
        The output file.

    Returns
    -------
    pathlib.Path
        ``<output>.json`` (e.g. ``s1.pkl.json``), as relative or absolute as ``output``.
    """
    return Path(str(output) + ".json")


def file_record(path, output_folder=None, data: bytes | None = None) -> dict:
    """Identity of an input file: absolute path, path relative to the output's folder, size,
    mtime_ns, and the sha256 of small files (of ``data`` when the caller has the bytes).

    Parameters
    ----------
    path : str or os.PathLike
        The input file.
    output_folder : str or os.PathLike, optional
        The output's folder, for "relpath"; None: no "relpath".
    data : bytes, optional
        The file's content, when the caller has read it: hashed instead of reading the
        file again.

    Returns
    -------
    dict
        "path" (absolute, str), "size" (bytes), "mtime_ns", "relpath" (with
        ``output_folder``) and "sha256" (hex; files of at most ``HASH_MAX_BYTES``).

    Raises
    ------
    OSError
        If the file cannot be stat'ed or (to hash it) read.
    """
    path = Path(os.path.abspath(path))
    st = os.stat(path)
    rec = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if output_folder is not None:
        rec["relpath"] = os.path.relpath(path, output_folder)
    if st.st_size <= HASH_MAX_BYTES:
        if data is None:
            with open(path, "rb") as fh:
                data = fh.read(HASH_MAX_BYTES + 1)
        rec["sha256"] = hashlib.sha256(data).hexdigest()
    return rec


FINGERPRINT_BYTES = 4096


def fingerprint(path) -> str | None:
    """sha256 of an output's first and last 4 KB: tells one output from another of its size.

    Snakemake touches every output after its job, so an output's mtime is not what the
    sidecar saw; an output whose mtime moved by more than ``TOUCH_WINDOW_NS`` is compared by
    this instead (see ``ltpa.study.staleness``).

    Parameters
    ----------
    path : str or os.PathLike
        The output file.

    Returns
    -------
    str or None
        The hex sha256 of its first ``FINGERPRINT_BYTES`` (4096) bytes followed by its last
        4096 bytes that are not among those (none for a file of at most 4096 bytes); None
        when the file cannot be opened or read.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(FINGERPRINT_BYTES)
            size = os.fstat(fh.fileno()).st_size
            tail = b""
            if size > FINGERPRINT_BYTES:
                fh.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                tail = fh.read(FINGERPRINT_BYTES)
    except OSError:
        return None
    return hashlib.sha256(head + tail).hexdigest()


# an output touched within this long after its sidecar was written is the one it describes
TOUCH_WINDOW_NS = 600 * 10**9


def sha256_of(path, limit=HASH_MAX_BYTES) -> str | None:
    """sha256 of the regular file at ``path`` if it has at most ``limit`` bytes, else None
    (read in 1 MB blocks: outputs are hashed up to ``OUTPUT_HASH_MAX_BYTES``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    limit : int, optional
        The largest size in bytes hashed (default ``HASH_MAX_BYTES``, 1 MB).

    Returns
    -------
    str or None
        The hex digest; None when the file is larger than ``limit``, is not a regular file
        (opened without blocking, so a FIFO never stalls) or cannot be opened or read.
    """
    h = hashlib.sha256()
    total = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                total += len(block)
                if total > limit:
                    return None
                h.update(block)
    except OSError:
        return None
    finally:
        os.close(fd)
    return h.hexdigest()


def write(output, kind: str, *, inputs: dict, params: dict, scan_id=None, atlas=None,
          **content) -> None:
    """Write ``<output>.json`` atomically, describing ``output`` as it is on disk now.

    The output's record holds its absolute path, size, mtime_ns, ``fingerprint`` and, for an
    output of at most ``OUTPUT_HASH_MAX_BYTES``, its sha256.

    Parameters
    ----------
    output : str or os.PathLike
        The output, already in place.
    kind : str
        One of ``KINDS``.
    inputs : dict
        Input field -> its file record (``file_record``, ``InputWatch.records``).
    params : dict
        What besides the inputs decides the content (``JobSpec.params``).
    scan_id : str, optional
        The scan the output belongs to.
    atlas : str, optional
        The atlas key (label and patterns outputs).
    **content
        Further top-level entries (e.g. stats, build, region_ids); numpy values and paths
        are written as JSON numbers, lists and strings.

    Raises
    ------
    OSError
        If the output cannot be stat'ed or the sidecar cannot be written.
    """
    assert kind in KINDS, kind
    output = Path(os.path.abspath(output))
    st = os.stat(output)
    fp = fingerprint(output)
    digest = sha256_of(output, OUTPUT_HASH_MAX_BYTES) if st.st_size <= OUTPUT_HASH_MAX_BYTES \
        else None
    body = {
        "sidecar_version": SIDECAR_VERSION,
        "ltpa_version": __version__,
        "kind": kind,
        "scan_id": scan_id,
        "atlas": atlas,
        "output": {"path": str(output), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                   "fingerprint": fp, **({"sha256": digest} if digest else {})},
        "inputs": inputs,
        "params": params,
        **content,
    }
    with atomic_open(path_of(output), "w") as fh:
        json.dump(body, fh, indent=1, sort_keys=True, default=_json_default)
        fh.write("\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


NO_SIDECAR = "it has no sidecar"


def read(output) -> tuple[dict | None, str | None]:
    """``(sidecar, None)``, or ``(None, why)`` when it is missing, unreadable or malformed.

    Never raises on a bad sidecar: one that is not a regular file, is over ``MAX_BYTES``,
    is not UTF-8 JSON, or is not an object of this ``SIDECAR_VERSION`` with the required
    entries of the right types counts as malformed.

    Parameters
    ----------
    output : str or os.PathLike
        The output whose sidecar (``path_of(output)``) is read.

    Returns
    -------
    body : dict or None
        The sidecar's content; None when it cannot be used.
    why : str or None
        None with a body; else why there is none: ``NO_SIDECAR`` when it does not exist,
        otherwise a message naming the sidecar's path and the problem.
    """
    path = path_of(output)
    try:
        data = read_regular(path, MAX_BYTES)
    except FileNotFoundError:
        return None, NO_SIDECAR
    except OSError as exc:
        return None, f"its sidecar {str(path)!r} cannot be read ({exc.strerror})"
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"its sidecar {str(path)!r} is not valid JSON ({str(exc)[:80]})"
    problem = _check(body)
    if problem:
        return None, f"its sidecar {str(path)!r} is not an ltpa sidecar ({problem})"
    return body, None


def _check(body) -> str | None:
    if not isinstance(body, dict):
        return f"a JSON {type(body).__name__}, not an object"
    if body.get("sidecar_version") != SIDECAR_VERSION:
        return (f"sidecar_version {str(body.get('sidecar_version'))[:20]}, "
                f"expected {SIDECAR_VERSION}")
    if body.get("kind") not in KINDS:
        return f"kind {str(body.get('kind'))[:40]!r}"
    out = body.get("output")
    if not isinstance(out, dict) or not _is_path(out.get("path")) or \
            not _is_int(out.get("size")) or not _is_int(out.get("mtime_ns")) or \
            not isinstance(out.get("fingerprint"), str):
        return "'output' must hold path, size, mtime_ns and fingerprint"
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        return "'inputs' is not an object"
    for fld, rec in inputs.items():
        if rec is None:
            continue
        if not isinstance(rec, dict) or not _is_path(rec.get("path")) \
                or not _is_int(rec.get("size")) or not _is_int(rec.get("mtime_ns")) \
                or not _is_path(rec.get("relpath", "")) \
                or not isinstance(rec.get("sha256", ""), str):
            return f"input {str(fld)[:40]!r} is not a file record"
    if not isinstance(body.get("params"), dict):
        return "'params' is not an object"
    for key in ("stats", "build"):
        if key in body and not isinstance(body[key], dict):
            return f"{key!r} is not an object"
    if "region_ids" in body and not (isinstance(body["region_ids"], list)
                                     and all(_is_int(v) and INT64_MIN <= v <= INT64_MAX
                                             for v in body["region_ids"])):
        return "'region_ids' is not a list of 64-bit integers"
    if not isinstance(out.get("sha256", ""), str):
        return "'output.sha256' is not a string"
    return None


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_path(v) -> bool:
    """A string the file system can take: no NUL byte, no lone surrogate (which the file
    system encoding cannot encode); ltpa never writes other paths."""
    if not isinstance(v, str) or "\x00" in v:
        return False
    try:
        os.fsencode(v)
    except UnicodeError:
        return False
    return True


def stats(output) -> dict:
    """The ``stats`` of a valid sidecar, else {} (for QC and the report).

    Parameters
    ----------
    output : str or os.PathLike
        The output whose sidecar is read (``read``).

    Returns
    -------
    dict
        The sidecar's "stats"; {} when there is no valid sidecar or it has no stats.
    """
    body, _ = read(output)
    return (body or {}).get("stats") or {}


def region_ids(body: dict, output) -> np.ndarray:
    """The sorted region ids a connection-ids sidecar decodes with, checked.

    They must be strictly increasing 64-bit integers, and when the region list they came
    from (the sidecar's graphml_path or labels_path input, else its atlas, for the atlas's
    own labels) is still the file the sidecar records, they must be the ones that file gives:
    an edited sidecar would change every decoded region silently. DamagedFileError otherwise.

    Parameters
    ----------
    body : dict
        A connection-ids sidecar, as ``read`` returns it.
    output : str or os.PathLike
        The npy it describes, for the messages.

    Returns
    -------
    numpy.ndarray
        The sidecar's region_ids, 1-D int64.

    Raises
    ------
    DamagedFileError
        If the ids are not strictly increasing, or differ from those of the unchanged
        region list (or atlas) they were built from.
    """
    where = f"sidecar {str(path_of(output))!r}"
    ids = np.asarray(body.get("region_ids"), dtype=np.int64)
    if ids.ndim != 1 or (ids.size > 1 and not (np.diff(ids) > 0).all()):
        raise DamagedFileError(f"{where}: region_ids are not strictly increasing integers; the "
                               f"sidecar was edited: rebuild {str(output)!r}")
    inputs = body.get("inputs") or {}
    for fld in ("graphml_path", "labels_path", "volume_path"):
        rec = inputs.get(fld)
        if rec is None:
            continue
        if not _unchanged_input(rec):
            return ids  # the list changed since: the sidecar's copy is the one it was built with
        expected = _regions_of(fld, rec["path"])
        if not np.array_equal(expected, ids):
            raise DamagedFileError(f"{where}: region_ids ({ids.size}) differ from the region "
                                   f"list {fld} {rec['path']!r} it was built from "
                                   f"({expected.size}); the sidecar was edited: rebuild "
                                   f"{str(output)!r}")
        return ids
    return ids


def _unchanged_input(rec: dict) -> bool:
    try:
        st = os.stat(rec["path"])
    except (OSError, ValueError):
        return False
    if st.st_size != rec["size"]:
        return False
    if st.st_mtime_ns == rec["mtime_ns"]:
        return True
    digest = rec.get("sha256")
    return digest is not None and sha256_of(rec["path"]) == digest


def _regions_of(fld, path) -> np.ndarray:
    if fld == "graphml_path":
        regions = regions_from_graphml(path)
    elif fld == "labels_path":
        regions = regions_from_table(path)
    else:
        regions = np.unique(read_label_volume(path))
        regions = regions[regions != 0]
    return np.unique(np.asarray(regions, dtype=np.int64))
