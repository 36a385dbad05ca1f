"""The ``<output>.json`` sidecar: what an output was built from. One module owns the format.

Every output the workflow makes gets a sidecar, written after the output is in place:

    {"sidecar_version": 2, "ltpa_version": ..., "kind": "track_dataset" | "key_trk" |
     "connection_ids" | "qsdr_atlas" | "track_scalars",
     "scan_id": ..., "atlas": ...,
     "output": {"path", "size", "mtime_ns"},            # the file this sidecar describes
     "inputs": {field: {"path", "relpath", "size", "mtime_ns", "sha256"?}},
     "params": {...},                                     # what else decides the content
     "stats": {...}, and per kind: "build", "region_ids", "connection_ids_start_at", ...}

``relpath`` is the input's path relative to the output's folder, so a study moved or copied
whole (with its times kept: ``cp -a``, ``rsync -a``) is still up to date; ``sha256`` is kept
for inputs up to ``HASH_MAX_BYTES``, so an unchanged small file that was touched is too.

``read`` never raises on a bad sidecar: it returns ``(None, why)`` and the output counts as
out of date; QC, status and the workflow read sidecars only through it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import atomic_open

SIDECAR_VERSION = 2
MAX_BYTES = 16 << 20  # a sidecar of a scan with a 10^4-region list is ~100 KB
HASH_MAX_BYTES = 1 << 20  # inputs up to 1 MB get a content hash (atlases, graphml, tables)
KINDS = ("track_dataset", "key_trk", "connection_ids", "qsdr_atlas", "track_scalars")


def path_of(output) -> Path:
    return Path(str(output) + ".json")


def file_record(path, output_folder=None, data: bytes | None = None) -> dict:
    """Identity of an input file: absolute path, path relative to the output's folder, size,
    mtime_ns, and the sha256 of small files (of ``data`` when the caller has the bytes)."""
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
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    return hashlib.sha256(data).hexdigest()


def write(output, kind: str, *, inputs: dict, params: dict, scan_id=None, atlas=None,
          **content) -> None:
    """Write ``<output>.json`` atomically, describing ``output`` as it is on disk now."""
    assert kind in KINDS, kind
    output = Path(os.path.abspath(output))
    st = os.stat(output)
    fp = fingerprint(output)
    body = {
        "sidecar_version": SIDECAR_VERSION,
        "ltpa_version": __version__,
        "kind": kind,
        "scan_id": scan_id,
        "atlas": atlas,
        "output": {"path": str(output), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                   "fingerprint": fp},
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


def read(output) -> tuple[dict | None, str | None]:
    """``(sidecar, None)``, or ``(None, why)`` when it is missing, unreadable or malformed."""
    path = path_of(output)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, "it has no sidecar"
    except OSError as exc:
        return None, f"its sidecar {str(path)!r} cannot be read ({exc.strerror})"
    if st.st_size > MAX_BYTES:
        return None, f"its sidecar {str(path)!r} is {st.st_size >> 20} MB, not a sidecar"
    try:
        with open(path, "rb") as fh:
            body = json.loads(fh.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
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
                                     and all(_is_int(v) for v in body["region_ids"])):
        return "'region_ids' is not a list of integers"
    return None


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
    """The ``stats`` of a valid sidecar, else {} (for QC and the report)."""
    body, _ = read(output)
    return (body or {}).get("stats") or {}
