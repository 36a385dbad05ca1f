"""Bounded-time fuzz of every input format ltpa reads, through the real entry points.

    python benchmarks/fuzz.py [--format all|trk|trk.gz|tck|trx|nifti|graphml|labels|sidecar|
                                        local_data|pkl|request|cache] [--seconds 60]
                              [--seed 0]
                              [--mem-gb 4] [--json]
    python benchmarks/fuzz.py --format FMT --replay FILE [--meta JSON]   # rerun one saved input

For each format (``--format all``: one after the other, ``--seconds`` each), small real seed
files are made in a temporary folder and mutated; each mutated input runs through the
package's own entry point in a worker process with an address-space limit (``--mem-gb``), so
a file that makes the code allocate without bound is a ``MemoryError`` crash, not a dead
machine. Inputs that take longer than 30 s are killed and count as crashes (hangs).

- ``trk`` (the seeds and mutations of ``fuzz_trk.py``: little/big-endian, scalars and properties,
  QSDR and native grids, zero/one-point streamlines; bit flips, truncation, count words and
  header fields set to edge values, NaN/inf, splices), ``trk.gz`` (those .trk gzipped; the
  inner .trk mutated then compressed, the compressed bytes mutated, multi-member streams,
  trailing garbage, a zero-filled bomb), ``tck`` (written by nibabel's ``TckFile`` and by hand
  as Float32/64 LE/BE with empty and one-point streamlines; header fields ``count``,
  ``datatype``, ``file`` set to edge values, lines duplicated/removed, no ``END``, CRLF,
  rows set to NaN/inf patterns, rows deleted or inserted around the end-of-file marker, byte
  mutations), ``trx`` (trx-python's ``TrxFile.from_tractogram`` + ``save``, and by hand:
  float16/32/64 positions, uint32/64 offsets with and without the final one, dpv/dps/groups,
  deflated, a folder; header.json values replaced by wrong types/edge values, offsets made
  decreasing/out of range, arrays truncated, members renamed/duplicated/removed, zip bytes
  flipped): ``index_scan(path, out.pkl, space=...)`` then ``label_scan(path, atlas, out.npy)``
  (a .tck/.trx is put on the QSDR grid with ``space="qsdr"``). An accepted input is compared
  with an independent reference: nibabel's reading of the file (``.trk``: voxmm exactly as
  stored, through nibabel's own header and record reader; ``.tck``: ``TckFile.load``,
  RAS -> QSDR voxel ``floor(inv(QSDR_AFFINE) @ ras + 0.5)``) or trx-python's ``load``
  (``.trx``), hashed with ``tests/reference.py``'s ``hash_slow`` (compared with the pkl's
  ``tracks_at_ijk``) and labeled with its ``label_slow`` (compared with the npy); streamline
  counts and lengths must agree too. For .tck/.trx, streamlines with a coordinate within 1e-3
  voxel of a voxel face are left out of the comparison (float rounding may pick either
  voxel), and empty streamlines are matched by position (nibabel drops them). If the
  reference cannot read a file that ltpa accepted, the input counts as "accepted, no
  reference"; the fuzzer's own simple reader (``fuzz_trk.read_slow`` for .trk, an MRtrix-rule
  reader for .tck) then still checks it when it can (``checked by own reader`` in ``--json``).
  (A .trk with a negative ``n_count``, which ltpa reads like 0 = "not given" and nibabel as
  "no records", is checked by the own reader only.) Atlases are random labels on the
  streamlines' grid (for a .trk: its shape and the affine nibabel's rule gives its header).
- ``nifti``: atlases (int16/int32/int64/uint8/uint16/float32/float64 with integral values,
  scl_slope, NIfTI-2, big-endian, the QSDR grid stored flipped or with axes swapped, other
  shapes and 2-D/4-D; .nii and .nii.gz) on the QSDR grid; header fields (dim, datatype,
  bitpix, vox_offset, scaling, pixdim, q/sform, magic, extensions) and voxel values (NaN, inf,
  0.5, -1, 2^63, ...) set to edge values, bytes mutated, compressed streams damaged:
  ``label_scan(trk, atlas, out)`` on the demo scan's .trk or a random-walk .trk (regions from
  the atlas, a graphml or a label table) compared with ``label_slow`` on nibabel's data, as
  stored or reoriented by index to the QSDR grid by its affine (nibabel's ``io_orientation``)
  when the affine is another voxel order of that grid; an accepted atlas that is not a 3-D
  volume of integers in [0, 2^63-1] on the trk grid is a wrong answer.
- ``graphml``: networkx-written and hand-written files (directed, multigraph, no namespace,
  yEd-style, nested graphs, hyperedges, entities, nodes only named by edges); text mutations
  and node ids, keys, namespaces, encodings set to edge values: ``regions_from_graphml``
  compared with networkx's ``read_graphml`` node ids as ints (when networkx reads the file).
- ``labels``: TSV/CSV ``index,name`` tables (header row, quoted, no header), FreeSurfer and
  MRtrix LUTs; numbers replaced by huge/negative/NaN/odd spellings, lines duplicated/deleted,
  separators changed, BOM, invalid UTF-8: ``regions_from_table`` compared with a parser
  written here from the documented rules. An input where the rules are ambiguous (an index
  Python's ``int`` reads but ASCII digits do not, e.g. ``1_000``, non-ASCII digits or spaces)
  counts as "accepted, no reference".
- ``sidecar``: the real ``<output>.json`` of a pkl, a key .trk and two npys of the demo scan
  (made by ``index_scan``/``label_scan``), mutated as JSON (values of wrong types, huge ints,
  NaN, NUL and lone surrogates in paths, deep nesting, keys removed/added) and as text:
  ``ltpa.study.staleness.judge_all([spec])`` (the ``JobSpec`` built as ``pipeline`` does),
  ``ltpa.study.sidecar.read`` and ``sidecar.stats``. Any exception is a crash. Checked: a sidecar
  equal to the original gives ``ok``; one that ``read`` refuses, or whose ``params`` differ
  from the job's, gives ``out of date``; other verdicts count as "accepted, no reference".
- ``cache``: the study's header cache (``<stem>.ltpa/cache/inputs.json``) of a valid demo
  study, mutated as JSON and text (entries of wrong shapes, stale errors, garbage):
  ``ltpa.study.study.load_study`` must find no problem, and leave a cache holding the same facts.
  The ``sidecar`` format also decodes ``region_ids`` (``sidecar.region_ids``): an edit is
  a clear error, never a silent decoding.
- ``local_data``: the demo's local_data.json (and variants with .tck/native/reference_volume,
  labels_path, track_scalars, b0 atlases) mutated as JSON and text: ``ltpa.study.study.load_study``;
  a Study is checked against a schema-lite reading written here (a non-empty list of
  objects with unique, valid ``scan_id`` and string ``scan_group``, in order).
- ``request``: what a job server child reads from a connection (``ltpa.jobs.wire``): the
  client's real request (argv with a job spec, cwd, allowlisted env) mutated as JSON and text,
  nested up to 100,000 levels, framed with a length that is exact, short, long or 2^32-1 and
  0-4 descriptors, sent over a socketpair to ``_recv_request`` then ``parse_request``. An
  accepted request must equal Python's reading of the JSON (env filtered by the allowlist),
  nest at most ``MAX_JSON_DEPTH`` levels and come with exactly 3 descriptors; on every path
  no received descriptor may stay open.
- ``pkl``: ``fuzz_pkl.py``'s hand-built payloads and mutated real pkls, through its worker
  (audit hook; ``verify()`` on accepted files, which count as "accepted, no reference").

Outcomes per format: inputs, accepted and equal to the reference, accepted without a
reference, rejected with ``LtpaError``, crashes (any other exception, the worker dying or
hanging; by distinct signature: exception type + innermost ltpa frame) and wrong answers
(``WrongAnswer:<what>``). An exception, death or hang while a *reference* runs (nibabel,
networkx, trx-python, the slow loops) is not ltpa's: it counts as "no reference" (``--json``
lists it). Each distinct crash/wrong answer is saved under
``benchmarks/out/fuzz_crashes/<format>/`` (the input, and ``<id>.txt`` with the mutation, the
traceback and a one-line reproducer: ``--replay`` runs the saved input through the same code,
with the same seeds, in a fresh folder; a sidecar or local_data.json is saved with the demo
study's folder written as ``@STUDY@``). Prints a markdown table (``--json``: JSON); exits 1 on
any crash or wrong answer.

Not part of the test suite; run it by hand or in a nightly job. At most one worker runs
at a time.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out" / "fuzz_crashes"
for _p in (str(HERE), str(REPO / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

FORMATS = ("trk", "trk.gz", "tck", "trx", "nifti", "graphml", "labels", "sidecar", "local_data",
           "pkl", "request", "cache")
INPUT_TIMEOUT = 30.0  # seconds one input may take before it counts as a hang
STARTUP_TIMEOUT = 180.0
FACE_TOL = 1e-3  # .tck/.trx: streamlines with a coordinate this close to a voxel face are skipped
MAX_REF_POINTS = 50_000  # the slow references run on inputs up to this many points
MAX_LABEL = 2**63 - 1
# QSDR native voxel -> MNI key voxel (i + 6, 101 - j, k + 11), written out
# (not from ltpa.formats.grids)
MNI_DIM = (91, 109, 91)
STUDY_TOKEN = "@STUDY@"

NAN, INF = float("nan"), float("inf")


class WrongAnswer(Exception):
    def __init__(self, stage: str, text: str):
        super().__init__(f"{stage}: {text}")
        self.stage = stage


class NoReference(Exception):
    pass


@dataclass
class Payload:
    name: str  # file (or folder) name in the input folder
    data: object  # bytes, or {relative path: bytes} for a folder
    meta: dict = field(default_factory=dict)

    def digest(self) -> str:
        h = hashlib.sha1()
        if isinstance(self.data, dict):
            for k in sorted(self.data):
                h.update(k.encode("utf-8", "surrogatepass") + b"\0" + self.data[k])
        else:
            h.update(self.data)
        return h.hexdigest()[:12]


class Ctx:
    """The worker's folder, its seed generator and counters of notable events."""

    def __init__(self, work: Path, seed: int):
        self.work = work
        self.seed = seed
        self.rng_seeds = np.random.default_rng(seed)
        self.inputs = work / "in"
        self.out = work / "out"
        for d in (self.inputs, self.out, work / "seeds", work / "ref", work / "atlases"):
            d.mkdir(parents=True, exist_ok=True)
        self.extra = Counter()
        self.current_phase = "ltpa"
        self.notes: dict = {}
        self._atlases: dict = {}

    def phase(self, name: str) -> None:
        """What runs now ("ltpa" or "reference"): a worker that dies is blamed on it."""
        (self.work / "phase").write_text(name)
        self.current_phase = name

    def note(self, key: str, text: str = "") -> None:
        self.extra[key] += 1
        if text and key not in self.notes:
            self.notes[key] = text[:400]

    def clean_out(self) -> None:
        for p in self.out.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()

    def atlas_for(self, dim, affine):
        """(path, labels) of a random int16 atlas on a grid; None if the grid is too big."""
        import nibabel as nib

        dim = tuple(int(d) for d in dim)
        if len(dim) != 3 or min(dim) <= 0 or int(np.prod(dim, dtype=np.int64)) > 2_000_000:
            return None
        affine = np.asarray(affine, dtype=np.float64)
        key = (dim, np.round(affine, 6).tobytes())
        if key not in self._atlases:
            if len(self._atlases) > 64:
                self._atlases.clear()
            rng = np.random.default_rng(zlib.crc32(repr(dim).encode()))
            atlas = rng.integers(0, 6, dim).astype(np.int16)
            atlas[rng.random(dim) < 0.4] = 0
            path = self.work / "atlases" / f"a{zlib.crc32(repr(key).encode()):08x}.nii"
            nib.Nifti1Image(atlas, affine).to_filename(str(path))
            self._atlases[key] = (path, atlas)
        return self._atlases[key]


# --------------------------------------------------------------------------- generic mutations

EDGE_INTS = [0, 1, -1, 2, 255, 256, 32767, -32768, 65535, 2**31 - 1, -2**31, 2**32, 2**53 + 1,
             2**63 - 1, 2**63, -2**63, 2**64, 10**6]
EDGE_FLOATS = [0.0, -0.0, 0.5, -1.0, 1e-45, 1e-30, 1e30, 3.4e38, 1e308, NAN, INF, -INF,
               2.0**63, 2.0**64, 16777217.0]
NUMBER_TEXTS = ["0", "-0", "-1", "1", "+7", "1.5", "-1e3", "1e309", "NaN", "Infinity",
                "-Infinity", "nan", "inf", "9223372036854775807", "9223372036854775808",
                "-9223372036854775809", "18446744073709551616", "9" * 5000, "0x1F", "1_000",
                "\u0663", "1e-400", "00012", " 5 ", "", "1.0", "2147483648", "-2147483649"]
UNICODE_TEXTS = ["\u00e9", "\u202e", "\x00", "\ufeff", "\U0001F600", "\u2028", "\x85", "\u00a0",
                 "\x1c", "\u03a9" * 2000, "\r", "\t", "\\", "/", "{x}", "~", "..", "\udcff",
                 "\x7f", "\n\n", "\n"]


def _pick(rng, items):
    return items[int(rng.integers(0, len(items)))]


def mutate_bytes(data: bytes, rng, lo: int = 0) -> tuple[bytes, str]:
    """One byte-level change at or after offset ``lo``."""
    b = bytearray(data)
    n = len(b)
    kind = _pick(rng, ["flip", "flip", "byte", "truncate", "append", "delete", "duplicate",
                       "insert", "zero"])
    lo = min(lo, max(n - 1, 0))
    if kind in ("flip", "byte", "zero") and n:
        pos = int(rng.integers(lo, n))
        if kind == "flip":
            bit = int(rng.integers(0, 8))
            b[pos] ^= 1 << bit
            return bytes(b), f"flip byte {pos} bit {bit}"
        b[pos] = 0 if kind == "zero" else int(rng.integers(0, 256))
        return bytes(b), f"byte {pos} = {b[pos]}"
    if kind == "truncate" and n:
        cut = int(rng.integers(lo, n))
        return bytes(b[:cut]), f"truncate to {cut}"
    if kind in ("delete", "duplicate") and n:
        p = int(rng.integers(lo, n))
        q = min(n, p + int(rng.integers(1, 64)))
        if kind == "delete":
            return bytes(b[:p] + b[q:]), f"delete bytes {p}:{q}"
        return bytes(b[:q] + b[p:]), f"duplicate bytes {p}:{q}"
    if kind == "insert" and n:
        p = int(rng.integers(lo, n + 1))
        k = int(rng.integers(1, 32))
        return bytes(b[:p]) + rng.integers(0, 256, k, dtype=np.uint8).tobytes() + bytes(b[p:]), \
            f"insert {k} random bytes at {p}"
    k = int(rng.integers(1, 64))
    return bytes(b) + rng.integers(0, 256, k, dtype=np.uint8).tobytes(), f"append {k} bytes"


_NUM_RE = re.compile(rb"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WORD_RE = re.compile(rb"[A-Za-z_][A-Za-z_0-9.:-]*")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def mutate_text(data: bytes, rng) -> tuple[bytes, str]:
    """One text-level change: numbers, lines, words, unicode, line ends, length."""
    kind = _pick(rng, ["number", "number", "dup_line", "del_line", "swap_lines", "unicode",
                       "truncate", "newlines", "bytes", "long_line", "word", "bom"])
    lines = data.split(b"\n")
    if kind == "number":
        ms = list(_NUM_RE.finditer(data))
        if ms:
            m = _pick(rng, ms)
            v = _pick(rng, NUMBER_TEXTS)
            return (data[:m.start()] + _enc(v) + data[m.end():],
                    f"number {m.group(0)[:20]!r} -> {v[:20]!r}")
    if kind in ("dup_line", "del_line") and lines:
        i = int(rng.integers(0, len(lines)))
        if kind == "dup_line":
            lines.insert(i, lines[i])
        else:
            del lines[i]
        return b"\n".join(lines), f"{kind} {i}"
    if kind == "swap_lines" and len(lines) > 1:
        i, j = (int(x) for x in rng.integers(0, len(lines), 2))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines), f"swap lines {i} {j}"
    if kind == "unicode":
        p = int(rng.integers(0, len(data) + 1))
        u = _pick(rng, UNICODE_TEXTS)
        return data[:p] + _enc(u) + data[p:], f"insert {u[:8]!r} at {p}"
    if kind == "truncate" and data:
        cut = int(rng.integers(0, len(data)))
        return data[:cut], f"truncate to {cut}"
    if kind == "newlines":
        nl = _pick(rng, [b"\r\n", b"\r", b"\n\n", b"\x0b", b"\x85"])
        return data.replace(b"\n", nl), f"newlines -> {nl!r}"
    if kind == "long_line":
        p = int(rng.integers(0, len(data) + 1))
        k = int(_pick(rng, [1000, 70_000, 1_000_000]))
        return data[:p] + b"x" * k + data[p:], f"{k} x at {p}"
    if kind == "word":
        ws = list(_WORD_RE.finditer(data))
        if ws:
            m = _pick(rng, ws)
            other = (_pick(rng, ws).group(0) if rng.random() < 0.5
                     else _enc(_pick(rng, UNICODE_TEXTS)))
            return (data[:m.start()] + other + data[m.end():],
                    f"word {m.group(0)[:20]!r} -> {other[:20]!r}")
    if kind == "bom":
        bom = _pick(rng, [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])
        return bom + data, f"BOM {bom!r}"
    return mutate_bytes(data, rng)


def _json_nodes(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_nodes(v, path + (i,))


def _set_at(obj, path, value):
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return obj


class _Raw:
    """A value written into the JSON text as is (deep nesting, 5000-digit numbers)."""

    def __init__(self, text):
        self.text = text


def _wrong_value(rng):
    v = _pick(rng, ["none", "true", "false", "int", "float", "str", "list", "dict", "deep",
                    "hugeint", "nul", "surrogate", "path", "long"])
    return {
        "none": None, "true": True, "false": False,
        "int": _pick(rng, EDGE_INTS), "float": _pick(rng, EDGE_FLOATS),
        "str": _pick(rng, ["", "x", "1", "NaN", "qsdr", "-1", "track_dataset", "connection_ids"]),
        "list": _pick(rng, [[], [1, 2], ["a"], [None], [[]]]),
        "dict": _pick(rng, [{}, {"a": 1}, {"path": 1}, {"path": "x", "size": -1}]),
        "deep": _Raw("[" * (n := int(_pick(rng, [70, 1000, 100_000]))) + "]" * n),
        "hugeint": _Raw(_pick(rng, ["9" * 5000, "1" + "0" * 400, "-" + "9" * 4301])),
        "nul": "a\x00b", "surrogate": "\ud800x",
        "path": _pick(rng, ["/", ".", "..", "/dev/null", "/proc/self/mem", "~/x", "{scan}/x",
                            "../../../etc/passwd", "a/" * 3000, "C:\\x", "\\\\srv\\x"]),
        "long": "x" * int(_pick(rng, [300, 100_000])),
    }[v]


def _edit_string(s: str, rng) -> str:
    how = _pick(rng, ["nul", "unicode", "suffix", "prefix", "empty", "case", "dotdot", "slash"])
    if how == "nul":
        p = int(rng.integers(0, len(s) + 1))
        return s[:p] + "\x00" + s[p:]
    if how == "unicode":
        p = int(rng.integers(0, len(s) + 1))
        return s[:p] + _pick(rng, UNICODE_TEXTS + ["\ud800"]) + s[p:]
    if how == "suffix":
        return s + _pick(rng, [".bak", "/", "/..", ".gz", "x" * 300, " "])
    if how == "prefix":
        return _pick(rng, ["/", "./", "../", "~/", " ", "{a}"]) + s
    if how == "empty":
        return ""
    if how == "case":
        return s.upper()
    if how == "dotdot":
        return s.replace("/", "/../", 1)
    return s.replace("/", "//")


def json_dumps(obj, rng) -> bytes:
    raws = {}

    def strip(o):
        if isinstance(o, _Raw):
            key = f"@@RAW{len(raws)}@@"
            raws[key] = o.text
            return key
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items()}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    text = json.dumps(strip(obj), allow_nan=True, ensure_ascii=bool(rng.random() < 0.5),
                      indent=_pick(rng, [None, 1]))
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), raw)
    return _enc(text)


def mutate_json(data: bytes, rng, hot_keys=()) -> tuple[bytes, str]:
    """One JSON-level change (a value of a wrong type, an edit, a key removed or added)."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return mutate_text(data, rng)
    nodes = list(_json_nodes(obj))
    if hot_keys and rng.random() < 0.5:
        hot = [(p, v) for p, v in nodes if p and p[-1] in hot_keys]
        nodes = hot or nodes
    path, value = _pick(rng, nodes)
    kind = _pick(rng, ["wrong", "wrong", "edit", "delete", "add", "dup", "number"])
    where = "/".join(str(p) for p in path)[:80] or "<top>"
    if kind == "edit" and isinstance(value, str):
        new = _edit_string(value, rng)
        return json_dumps(_set_at(obj, path, new), rng), f"string at {where} -> {new[:40]!r}"
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        new = _pick(rng, [value + 1, value - 1, -value, value * 2**32, 0, float(value),
                          _Raw("9" * 5000)] + EDGE_INTS[:6])
        return (json_dumps(_set_at(obj, path, new), rng),
                f"number at {where} -> {str(getattr(new, 'text', new))[:30]}")
    if kind == "delete" and path:
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        del parent[path[-1]]
        return json_dumps(obj, rng), f"delete {where}"
    if kind == "add":
        dicts = [(p, v) for p, v in nodes if isinstance(v, dict)]
        if dicts:
            p, d = _pick(rng, dicts)
            key = _pick(rng, list(hot_keys) + ["x", "", "__proto__", "\x00", "\ud800"] if hot_keys
                        else ["x", "", "__proto__", "\x00", "\ud800"])
            d[key] = _wrong_value(rng)
            return json_dumps(obj, rng), f"add key {key!r} under {'/'.join(map(str, p))[:60]}"
    if kind == "dup":
        lists = [(p, v) for p, v in nodes if isinstance(v, list) and v]
        if lists:
            p, lst = _pick(rng, lists)
            lst.append(copy.deepcopy(_pick(rng, lst)))
            return json_dumps(obj, rng), f"duplicate an item of {'/'.join(map(str, p))[:60]}"
    new = _wrong_value(rng)
    shown = getattr(new, "text", new)
    return json_dumps(_set_at(obj, path, new), rng), f"{where} -> {str(shown)[:40]!r}"


def mutation_rounds(data: bytes, rng, text_share, change) -> tuple[bytes, str]:
    """1 or 2 rounds, each ``mutate_text`` with probability ``text_share``, else
    ``change(data, rng, descs)`` (a format's own kind of change); data and "; "-joined
    descriptions."""
    descs = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < text_share:
            data, d = mutate_text(data, rng)
            descs.append(d)
        else:
            data = change(data, rng, descs)
    return data, "; ".join(descs)


def mutate_json_or_text(data: bytes, rng, hot_keys=()) -> tuple[bytes, str]:
    descs = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.75:
            data, d = mutate_json(data, rng, hot_keys)
        else:
            data, d = mutate_text(data, rng)
        descs.append(d)
    return data, "; ".join(descs)


# --------------------------------------------------------------------------- slow references


def label_ref(sls, atlas, vs, regions, start=1):
    """tests/reference.py's label_slow; with many regions the same rule without its pair dict
    (O(R^2) entries): the pair's position in np.triu_indices(R) in closed form."""
    from reference import end_regions, label_slow

    regions = sorted(int(r) for r in regions)
    if len(regions) <= 300:
        return label_slow(sls, atlas, vs, regions, start)
    pos = {r: i for i, r in enumerate(regions)}
    n_reg = len(regions)
    out = np.zeros(len(sls), dtype=np.int64)
    for sid, ends in enumerate(end_regions(sls, atlas, vs, regions)):
        if ends is None:
            continue
        i, j = sorted((pos[ends[0]], pos[ends[1]]))
        # position of (i, j) in np.triu_indices(n_reg): rows 0..i-1 hold n_reg - r pairs each
        out[sid] = i * n_reg - i * (i - 1) // 2 + (j - i) + start
    return out


def qsdr_key(v):
    return (v[0] + 6, 101 - v[1], v[2] + 11)


def nib_trk_voxmm(raw: bytes):
    """(streamlines in voxmm exactly as stored, voxel size, header) by nibabel's trk reader."""
    from nibabel.streamlines.trk import TrkFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdr = TrkFile._read_header(io.BytesIO(raw))
        sls = [np.array(p, dtype=np.float64).reshape(-1, 3)
               for p, _, _ in TrkFile._read(io.BytesIO(raw), hdr)]
    vs = tuple(float(v) for v in hdr["voxel_sizes"])
    return sls, vs


def trk_header(raw: bytes):
    """The header record of a .trk (either byte order), or None."""
    from nibabel.streamlines.trk import header_2_dtype

    if len(raw) < 1000:
        return None
    for e in "<>":
        h = np.frombuffer(raw[:1000], dtype=header_2_dtype.newbyteorder(e))[0]
        if int(h["hdr_size"]) == 1000:
            return h
    return None


def trk_voxel_affine(h) -> np.ndarray:
    """voxel (centre) -> RAS of a .trk's own grid (nibabel's rule; see fuzz_trk.atlas_affine)."""
    from fuzz_trk import atlas_affine

    return atlas_affine(h)


def ras_to_voxel_units(sls, affine) -> list:
    """RAS mm -> ijk + 0.5 (so that floor() is the nearest-centre voxel), float64."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return [np.asarray(s, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3] + 0.5 for s in sls]


def dataset_facts(ds) -> dict:
    """What ltpa's output says (read through ltpa's own API, before any reference runs)."""
    index = {}
    for k in ds.tracks_at_ijk.keys():
        index[tuple(int(a) for a in k)] = [int(x) for x in ds.tracks_at_ijk[k].tolist()]
    return {"lengths": np.asarray(ds.tracks.lengths, dtype=np.int64).copy(),
            "n": int(ds.get_ntracks()), "index": index}


def check_streamlines(facts, ids, ref, vs, *, keeps_empty, key_of, key_dim, atlas, regions, tol):
    """Compare ltpa's index (and connection ids) with reference streamlines; WrongAnswer if not."""
    from reference import hash_slow

    lengths = facts["lengths"]
    n = int(lengths.shape[0])
    if facts["n"] != n:
        raise WrongAnswer("streamlines", f"get_ntracks() {facts['n']} but {n} lengths")
    ref_len = np.array([len(s) for s in ref], dtype=np.int64)
    if keeps_empty:
        if n != len(ref) or not np.array_equal(lengths, ref_len):
            raise WrongAnswer("streamlines", f"{n} streamlines, reference {len(ref)}; lengths "
                              f"{lengths[:8].tolist()} vs {ref_len[:8].tolist()}")
        id_of = np.arange(n)
    else:
        ref = [s for s in ref if len(s)]
        ref_len = ref_len[ref_len > 0]
        id_of = np.flatnonzero(lengths > 0)
        if len(id_of) != len(ref) or not np.array_equal(lengths[id_of], ref_len):
            raise WrongAnswer("streamlines", f"{len(id_of)} non-empty streamlines, reference "
                              f"{len(ref)}; lengths {lengths[id_of][:8].tolist()} vs "
                              f"{ref_len[:8].tolist()}")
    if ids is not None:
        if ids.shape != (n,):
            raise WrongAnswer("label", f"{ids.shape} connection ids for {n} streamlines")
        if np.any(ids[lengths == 0] != 0):
            raise WrongAnswer("label", "an empty streamline has a nonzero connection id")
    excluded = set()
    if tol > 0:
        for r, s in enumerate(ref):
            if s.size:
                frac = s / np.asarray(vs) - np.floor(s / np.asarray(vs))
                if np.any((frac < tol) | (frac > 1 - tol)):
                    excluded.add(r)
    skip = {int(id_of[r]) for r in excluded}
    want = {}
    for k, rs in hash_slow(ref, vs, key_of, key_dim).items():
        got_ids = sorted(int(id_of[r]) for r in rs if r not in excluded)
        if got_ids:
            want[k] = got_ids
    got = {}
    for k, ids_k in facts["index"].items():
        v = [x for x in ids_k if x not in skip]
        if v:
            got[k] = v
    if got != want:
        diff = sorted((set(got) ^ set(want)) or {k for k in got if got[k] != want.get(k)})[:3]
        examples = [(k, got.get(k), want.get(k)) for k in diff]
        raise WrongAnswer("index", f"voxel index differs from hash_slow ({len(got)} vs "
                          f"{len(want)} voxels; e.g. {examples})")
    if ids is not None and atlas is not None:
        exp = label_ref(ref, atlas, vs, regions)
        for r in range(len(ref)):
            if r not in excluded and int(ids[id_of[r]]) != int(exp[r]):
                raise WrongAnswer("label", f"connection id of streamline {int(id_of[r])} is "
                                  f"{int(ids[id_of[r]])}, label_slow says {int(exp[r])}")
    return len(excluded)


# --------------------------------------------------------------------------- streamline formats


def run_streamlines(ctx: Ctx, path: Path, space: str, kind: str, reference) -> str:
    """index_scan + label_scan on ``path``; the accepted result checked against ``reference``.

    ``reference()`` returns (how, streamlines, voxel size, keeps_empty, tol) with how in
    {"primary", "secondary"}, or raises NoReference.
    """
    from ltpa import load_track_dataset
    from ltpa.errors import LtpaError
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
    from ltpa.jobs.pipeline import index_scan, label_scan

    ctx.clean_out()
    out_pkl, out_npy = ctx.out / "out.pkl", ctx.out / "out.npy"
    try:
        index_scan(path, out_pkl, space=space, scan_id="fuzz")
    except LtpaError:
        return "rejected"
    ds = load_track_dataset(out_pkl)
    if kind in (".tck", ".trx"):
        dim, affine = QSDR_DIM, QSDR_AFFINE
    else:
        raw = path.read_bytes()
        if kind == ".trk.gz":
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
                    raw = fh.read(1000)
            except Exception:  # noqa: BLE001
                raw = b""
        h = trk_header(raw)
        if h is None:
            raise WrongAnswer("header", "ltpa accepted a .trk whose header has no hdr_size 1000")
        dim = tuple(int(d) for d in h["dimensions"])
        affine = QSDR_AFFINE if space == "qsdr" else trk_voxel_affine(h)
    got = ctx.atlas_for(dim, affine)
    ids = atlas = None
    if got is not None:
        apath, atlas = got
        try:
            label_scan(path, apath, out_npy, space=space, scan_id="fuzz", atlas_key="fuzz")
        except LtpaError as exc:
            ctx.note("index accepted, label rejected", str(exc))
            return "rejected"
        ids = np.load(out_npy)
    facts = dataset_facts(ds)
    ctx.last_n_streamlines = facts["n"]
    ctx.phase("reference")
    try:
        how, sls, vs, keeps_empty, tol = reference()
    except NoReference as exc:
        ctx.note(f"no reference: {str(exc)[:60]}")
        return "noref"
    if sum(len(s) for s in sls) > MAX_REF_POINTS:
        ctx.note("no reference: too many points for the slow references")
        return "noref"
    if space == "qsdr":
        key_of, key_dim = qsdr_key, MNI_DIM
    else:
        key_of, key_dim = (lambda v: v), dim
    regions = sorted(set(np.unique(atlas).tolist()) - {0}) if atlas is not None else []
    skipped = check_streamlines(facts, ids, sls, vs, keeps_empty=keeps_empty, key_of=key_of,
                                key_dim=key_dim, atlas=atlas, regions=regions, tol=tol)
    if skipped:
        ctx.note("comparisons with streamlines left out (a point on a voxel face)")
        ctx.extra["streamlines left out (a point on a voxel face)"] += skipped
    if how == "secondary":
        ctx.note("checked by own reader (reference could not read it)")
        return "noref"
    return "equal"


class TrkFormat:
    name = "trk"
    suffix = ".trk"

    def setup(self, ctx):
        import fuzz_trk

        self.ft = fuzz_trk
        self.seeds = fuzz_trk.make_seeds(ctx.work / "seeds", ctx.rng_seeds)

    def seed_name(self, seed):
        return seed["path"].name

    def unmutated(self, seed, rng):
        return Payload("input" + self.suffix, seed["data"], {"space": seed["space"]})

    def mutate(self, seed, rng):
        data, how = self.ft.mutate(seed, self.seeds, rng)
        return Payload("input.trk", data, {"space": seed["space"]}), "; ".join(how)

    def reference_of(self, raw: bytes):
        def ref():
            try:
                h = trk_header(raw)
                if h is not None and int(h["nb_streamlines"]) < 0:
                    # nibabel reads min(n_count, all) records: none for a negative n_count,
                    # which ltpa (like a 0) takes as "not given"
                    raise ValueError("negative n_count")
                sls, vs = nib_trk_voxmm(raw)
            except Exception as exc:  # noqa: BLE001 - nibabel refuses: the struct reader checks
                try:
                    sls = [np.asarray(s, dtype=np.float64) for s in self.ft.read_slow(raw)]
                    h = trk_header(raw)
                    vs = tuple(float(v) for v in h["voxel_sizes"])
                except Exception:  # noqa: BLE001
                    raise NoReference(f"nibabel: {type(exc).__name__}") from None
                return "secondary", sls, vs, True, 0.0
            return "primary", sls, vs, True, 0.0
        return ref

    def run(self, ctx, path, meta):
        return run_streamlines(ctx, path, meta["space"], ".trk",
                               self.reference_of(path.read_bytes()))

    def direct(self, path, meta):
        return (f"{sys.executable} -c \"from ltpa.jobs.pipeline import index_scan; "
                f"index_scan('{path}', '/tmp/fuzz_repro.pkl', space='{meta['space']}')\"")


class TrkGzFormat(TrkFormat):
    name = "trk.gz"
    suffix = ".trk.gz"

    def setup(self, ctx):
        super().setup(ctx)
        for s in self.seeds:
            s["gz"] = gzip.compress(s["data"], compresslevel=6, mtime=0)
        # a bomb: 40 MB of zero words (empty records) behind a header with n_count 0
        base = self.seeds[0]
        hdr = bytearray(base["data"][:1000])
        struct.pack_into("<i", hdr, 988, 0)
        bomb = gzip.compress(bytes(hdr) + bytes(40 << 20), compresslevel=9, mtime=0)
        self.seeds.append({**base, "path": Path("bomb.trk"), "data": bytes(hdr), "gz": bomb})

    def unmutated(self, seed, rng):
        return Payload("input.trk.gz", seed["gz"], {"space": seed["space"]})

    def mutate(self, seed, rng):
        kind = _pick(rng, ["inner", "inner", "inner", "outer", "members", "trailing", "gzheader"])
        inner = seed["data"]
        if kind == "inner" or (kind == "members" and rng.random() < 0.5):
            inner, how = self.ft.mutate(seed, self.seeds, rng)
            desc = "inner: " + "; ".join(how)
        else:
            desc = "inner unchanged"
        if kind == "outer":
            data, d = mutate_bytes(seed["gz"], rng)
            desc = f"compressed bytes: {d}"
        elif kind == "members":
            cut = int(rng.integers(0, len(inner) + 1))
            data = gzip.compress(inner[:cut], mtime=0) + gzip.compress(inner[cut:], mtime=0)
            desc += f"; two gzip members split at {cut}"
        elif kind == "trailing":
            tail = _pick(rng, [b"\0" * 8, b"\x1f\x8b", b"garbage", gzip.compress(b"", mtime=0),
                               rng.integers(0, 256, 100, dtype=np.uint8).tobytes()])
            data = gzip.compress(inner, mtime=0) + tail
            desc += f"; {len(tail)} bytes after the stream"
        elif kind == "gzheader":
            # FEXTRA / FNAME / FCOMMENT flags with odd contents
            flags = int(_pick(rng, [4, 8, 16, 2, 28, 0xE0]))
            body = zlib.compress(inner)[2:-4]
            extra = b""
            if flags & 4:
                extra += struct.pack("<H", int(_pick(rng, [0, 4, 65535]))) + b"ab"
            if flags & 8:
                extra += b"name\xff" + (b"\0" if rng.random() < 0.8 else b"")
            if flags & 16:
                extra += b"comment" * int(rng.integers(1, 1000)) + b"\0"
            if flags & 2:
                extra += b"\0\0"
            data = (b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff" + extra + body
                    + struct.pack("<II", zlib.crc32(inner), len(inner) & 0xFFFFFFFF))
            desc += f"; gzip header flags {flags:#x}"
        else:
            data = gzip.compress(inner, compresslevel=int(rng.integers(1, 10)), mtime=0)
        return Payload("input.trk.gz", data, {"space": seed["space"]}), desc

    def run(self, ctx, path, meta):
        def ref():
            try:
                raw = gzip.decompress(path.read_bytes())
            except Exception as exc:  # noqa: BLE001
                raise NoReference(f"python gzip: {type(exc).__name__}") from None
            return self.reference_of(raw)()

        return run_streamlines(ctx, path, meta["space"], ".trk.gz", ref)


# ----------------------------------------------------------------------------- .tck

TCK_DTYPES = {"Float32LE": "<f4", "Float32BE": ">f4", "Float64LE": "<f8", "Float64BE": ">f8"}
SPECIAL_ROWS = [[NAN, NAN, NAN], [NAN, 1.0, 2.0], [1.0, NAN, 2.0], [INF, INF, INF],
                [INF, 1.0, 2.0], [1.0, INF, 2.0], [-INF, -INF, -INF], [1e30, 0, 0], [0, 0, 0],
                [3.4e38, 3.4e38, 3.4e38], [1e39, 0, 0], [-0.0, -0.0, -0.0], [1e-45, 0, 0]]


def qsdr_ras_streamlines(rng, n, allow_empty=True, max_len=12):
    """Streamlines in RAS mm for the QSDR grid: voxel centres +-0.45, a few on faces or outside."""
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM

    out = []
    for i in range(n):
        k = 0 if (allow_empty and i == 1) else 1 if i == 2 else int(rng.integers(2, max_len))
        v = rng.integers(-3, np.array(QSDR_DIM) + 3, (k, 3))
        u = rng.uniform(-0.45, 0.45, (k, 3))
        if k and rng.random() < 0.2:
            u[int(rng.integers(0, k)), int(rng.integers(0, 3))] = 0.5  # on a face
        ijk = v + u
        out.append((ijk @ QSDR_AFFINE[:3, :3].T + QSDR_AFFINE[:3, 3]).astype(np.float32)
                   .astype(np.float64))
    return out


def tck_rows(sls) -> np.ndarray:
    parts = []
    for s in sls:
        parts.append(np.asarray(s, dtype=np.float64).reshape(-1, 3))
        parts.append(np.full((1, 3), NAN))
    parts.append(np.full((1, 3), INF))
    return np.concatenate(parts)


def tck_serialize(fields, rows, code, *, file_value="auto", end=True, magic="mrtrix tracks",
                  nl="\n") -> bytes:
    with np.errstate(all="ignore"):
        body = np.asarray(rows, dtype=np.float64).astype(code).tobytes()
    lines = [magic] + [f"{k}: {v}" for k, v in fields]

    def build(file_text):
        extra = [f"file: {file_text}"] if file_text is not None else []
        return _enc(nl.join(lines + extra + (["END"] if end else [])) + nl)

    if file_value == "auto":
        off = 0
        for _ in range(6):
            head = build(f". {off}")
            if len(head) == off:
                break
            off = len(head)
    elif file_value is None:
        head = build(None)
    else:
        base = len(build(". 0"))
        head = build(file_value.format(off=base, end=base + len(body), big=base + len(body) + 1))
    return head + body


def tck_parse(raw: bytes):
    """(fields, rows float64, numpy code) of a valid .tck (the seeds')."""
    end = raw.find(b"\nEND\n")
    fields = []
    off = None
    for line in raw[:end].decode("latin-1").split("\n")[1:]:
        k, v = line.split(":", 1)
        if k.strip() == "file":
            off = int(v.split()[1])
        else:
            fields.append((k.strip(), v.strip()))
    code = TCK_DTYPES[dict(fields).get("datatype", "Float32LE")]
    rows = np.frombuffer(raw[off:], dtype=code).reshape(-1, 3).astype(np.float64)
    return fields, rows, code


def tck_count(rows) -> int:
    """Streamlines before the end-of-file marker, by the MRtrix rule (NaN / Inf in x)."""
    inf = np.flatnonzero(np.isinf(rows[:, 0]))
    stop = int(inf[0]) if inf.size else rows.shape[0]
    return int(np.count_nonzero(np.isnan(rows[:stop, 0])))


def tck_own_read(raw: bytes, max_rows=200_000):
    """A simple reader of a .tck by MRtrix's rule: rows until x is Inf, split where x is NaN."""
    if not raw.startswith(b"mrtrix tracks"):
        return None
    end = raw.find(b"\nEND\n")
    if end < 0:
        return None
    fields = {}
    for line in raw[:end].decode("latin-1").split("\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    code = TCK_DTYPES.get(fields.get("datatype", "Float32LE"))
    parts = fields.get("file", "").split()
    if code is None or len(parts) != 2 or parts[0] != "." or not parts[1].isdigit():
        return None
    off = int(parts[1])
    item = 3 * np.dtype(code).itemsize
    n_rows = max(0, (len(raw) - off) // item)
    if off < end or n_rows > max_rows:
        return None
    rows = np.frombuffer(raw[off:off + n_rows * item], dtype=code).reshape(-1, 3).astype(np.float64)
    sls, cur = [], []
    for r in rows:
        if np.isinf(r[0]):
            break
        if np.isnan(r[0]):
            sls.append(np.array(cur, dtype=np.float64).reshape(-1, 3))
            cur = []
            continue
        if not np.all(np.isfinite(r)):
            return None
        cur.append(r)
    else:
        return None
    if cur:
        return None
    if "count" in fields and fields["count"].strip().isdigit() and int(fields["count"]) != len(sls):
        return None
    return sls


class TckFormat:
    name = "tck"

    def setup(self, ctx):
        import nibabel as nib

        rng = ctx.rng_seeds
        self.seeds = []
        sls = [s for s in qsdr_ras_streamlines(rng, 14) if len(s)]
        tg = nib.streamlines.Tractogram([s.astype(np.float32) for s in sls],
                                        affine_to_rasmm=np.eye(4))
        p = ctx.work / "seeds" / "nib.tck"
        nib.streamlines.TckFile(tg).save(str(p))
        raw = p.read_bytes()
        fields, rows, code = tck_parse(raw)
        self.seeds.append(dict(name="nib_f32le", fields=fields, rows=rows, code=code, raw=raw))

        def own(name, sls, dt, count=True):
            rows = tck_rows(sls)
            fields = ([("count", str(tck_count(rows)))] if count else []) + \
                [("datatype", dt), ("timestamp", "1.0")]
            raw = tck_serialize(fields, rows, TCK_DTYPES[dt])
            self.seeds.append(dict(name=name, fields=fields, rows=rows, code=TCK_DTYPES[dt],
                                   raw=raw))

        own("f32be", qsdr_ras_streamlines(rng, 10), "Float32BE")
        own("f64le_empty", qsdr_ras_streamlines(rng, 12), "Float64LE")
        own("f64be", qsdr_ras_streamlines(rng, 8), "Float64BE")
        own("f32le_nocount", qsdr_ras_streamlines(rng, 9), "Float32LE", count=False)
        own("empty", [], "Float32LE")
        own("one_point", [s[:1] for s in qsdr_ras_streamlines(rng, 6, allow_empty=False)],
            "Float32LE")

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("input.tck", seed["raw"], {})

    def mutate(self, seed, rng):
        fields = list(seed["fields"])
        rows = seed["rows"].copy()
        code = seed["code"]
        opts = {}
        descs = []
        count_set = False
        for _ in range(int(rng.integers(1, 4))):
            kind = _pick(rng, ["count", "datatype", "file", "no_file", "line", "no_end", "magic",
                               "crlf", "long", "row_set", "row_insert", "row_delete", "coord",
                               "splice", "drop_eof", "after_eof", "row_set", "coord", "bytes"])
            n = rows.shape[0]
            if kind == "count":
                v = _pick(rng, ["0", "-1", "1", "{n}", "{n1}", "{n_1}", "0000000005", "abc", "1.5",
                                "1e3", "9223372036854775808", "9" * 5000, "", " 3", "+3",
                                "\u0663", "1_0"])
                v = v.format(n=tck_count(rows), n1=tck_count(rows) + 1, n_1=tck_count(rows) - 1)
                fields = [(k, x) for k, x in fields if k != "count"] + [("count", v)]
                count_set = True
                descs.append(f"count: {v[:20]!r}")
            elif kind == "datatype":
                v = _pick(rng, list(TCK_DTYPES) + ["Float16LE", "Int32LE", "float32le", "Float32",
                                                    "", "Float32LE extra", "Float64"])
                if v in TCK_DTYPES and rng.random() < 0.5:
                    code = TCK_DTYPES[v]
                    descs.append(f"recoded as {v}")
                else:
                    descs.append(f"datatype: {v!r} (bytes unchanged)")
                fields = [(k, x) for k, x in fields if k != "datatype"] + [("datatype", v)]
            elif kind == "file":
                v = _pick(rng, [". 0", ". -5", ". {off}", ". {end}", ". {big}", "x {off}", ". abc",
                                ". 1e3", "", ". " + "9" * 30, ". {off} extra", ".  {off}",
                                "./other.dat {off}", ". 70000"])
                opts["file_value"] = v
                descs.append(f"file: {v!r}")
            elif kind == "no_file":
                opts["file_value"] = None
                descs.append("no file field")
            elif kind == "line":
                how = _pick(rng, ["dup", "del", "junk"])
                if how == "dup" and fields:
                    fields.insert(int(rng.integers(0, len(fields) + 1)), _pick(rng, fields))
                elif how == "del" and fields:
                    del fields[int(rng.integers(0, len(fields)))]
                else:
                    fields.insert(int(rng.integers(0, len(fields) + 1)),
                                  _pick(rng, [("foo", "bar"), ("no colon", ""),
                                              ("\u00e9t\u00e9", "\u2028"),
                                              ("END", ""), ("", ""), ("count", "")]))
                descs.append(f"header line {how}")
            elif kind == "no_end":
                opts["end"] = False
                descs.append("no END")
            elif kind == "magic":
                opts["magic"] = _pick(rng, ["mrtrix track", "MRTRIX TRACKS", "mrtrix tracks\r",
                                            "", "mrtrix tracksX", "mrtrix image"])
                descs.append(f"magic {opts['magic']!r}")
            elif kind == "crlf":
                opts["nl"] = "\r\n"
                descs.append("CRLF")
            elif kind == "long":
                fields.append(("comment", "x" * int(_pick(rng, [100, 70_000]))))
                descs.append("long header line")
            elif kind in ("row_set", "row_insert") and n:
                i = int(rng.integers(0, n + (kind == "row_insert")))
                row = np.asarray(_pick(rng, SPECIAL_ROWS), dtype=np.float64)
                rows = np.insert(rows, i, row, axis=0) if kind == "row_insert" else rows
                if kind == "row_set":
                    rows[i] = row
                descs.append(f"{kind} {i} = {row.tolist()}")
            elif kind == "row_delete" and n:
                i = int(rng.integers(0, n))
                rows = np.delete(rows, i, axis=0)
                descs.append(f"delete row {i}")
            elif kind == "coord" and n:
                i, a = int(rng.integers(0, n)), int(rng.integers(0, 3))
                if rng.random() < 0.5:
                    rows[i, a] = _pick(rng, EDGE_FLOATS)
                else:  # a voxel face of the QSDR grid: RAS = -2k - 1 + 78 (x), ...
                    rows[i, a] = float(int(rng.integers(-2, 100)) * 2 + 1)
                descs.append(f"row {i} axis {a} = {rows[i, a]}")
            elif kind == "splice":
                other = _pick(rng, self.seeds)["rows"]
                a = int(rng.integers(0, len(other)))
                b = int(rng.integers(a, len(other) + 1))
                at = int(rng.integers(0, n + 1))
                rows = np.concatenate([rows[:at], other[a:b], rows[at:]])
                descs.append(f"splice {b - a} rows at {at}")
            elif kind == "drop_eof" and n:
                rows = rows[:-1]
                descs.append("no end-of-file row")
            elif kind == "after_eof":
                extra = _pick(rng, self.seeds)["rows"][:int(rng.integers(1, 6))]
                rows = np.concatenate([rows, extra])
                descs.append(f"{len(extra)} rows after the end-of-file row")
            elif kind == "bytes":
                opts["bytes"] = True
        if not count_set and any(k == "count" for k, _ in fields) and rng.random() < 0.7:
            fields = [(k, str(tck_count(rows)) if k == "count" else v) for k, v in fields]
        data = tck_serialize(fields, rows, code, **{k: v for k, v in opts.items() if k != "bytes"})
        if opts.get("bytes"):
            data, d = mutate_bytes(data, rng)
            descs.append(d)
        return Payload("input.tck", data, {}), "; ".join(descs) or "reserialized"

    def run(self, ctx, path, meta):
        from ltpa.formats.grids import QSDR_AFFINE

        def ref():
            import nibabel as nib

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tck = nib.streamlines.TckFile.load(str(path), lazy_load=False)
                sls = [np.asarray(s, dtype=np.float64) for s in tck.streamlines]
                if not all(np.all(np.isfinite(s)) for s in sls):
                    raise ValueError("non-finite points")
                return ("primary", ras_to_voxel_units(sls, QSDR_AFFINE), (1.0, 1.0, 1.0), False,
                        FACE_TOL)
            except Exception as exc:  # noqa: BLE001 - nibabel refuses: the own reader checks
                own = tck_own_read(path.read_bytes())
                if own is None:
                    raise NoReference(f"nibabel: {type(exc).__name__}") from None
                return ("secondary", ras_to_voxel_units(own, QSDR_AFFINE), (1.0, 1.0, 1.0), True,
                        FACE_TOL)

        return run_streamlines(ctx, path, "qsdr", ".tck", ref)

    def direct(self, path, meta):
        return (f"{sys.executable} -c \"from ltpa.jobs.pipeline import index_scan; "
                f"index_scan('{path}', '/tmp/fuzz_repro.pkl', space='qsdr')\"")


# ----------------------------------------------------------------------------- .trx

TRX_FLOATS = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}
TRX_UINTS = {"uint32": "<u4", "uint64": "<u8", "uint16": "<u2", "int64": "<i8", "int32": "<i4"}


def trx_members(sls, pos="float32", off="uint32", final=True, extra=()):
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM

    lengths = [len(s) for s in sls]
    nv, ns = int(sum(lengths)), len(sls)
    points = np.concatenate([np.asarray(s).reshape(-1, 3) for s in sls]) if nv else np.zeros((0, 3))
    offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if not final:
        offs = offs[:-1]
    header = {"DIMENSIONS": list(QSDR_DIM), "VOXEL_TO_RASMM": QSDR_AFFINE.tolist(),
              "NB_VERTICES": nv, "NB_STREAMLINES": ns}
    members = [("header.json", json.dumps(header).encode())]
    if ns:
        members += [(f"positions.3.{pos}", points.astype(TRX_FLOATS[pos]).tobytes()),
                    (f"offsets.{off}", offs.astype(TRX_UINTS[off]).tobytes())]
    return members + list(extra)


def trx_zip(members, deflate) -> bytes:
    bio = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(bio, "w") as z:
            for name, data in members:
                zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                zi.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
                z.writestr(zi, data)
    return bio.getvalue()


def _safe_rel(name: str) -> str | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\x00" in name:
        return None
    return "/".join(parts)


class TrxFormat:
    name = "trx"

    def setup(self, ctx):
        import nibabel as nib
        from trx.trx_file_memmap import TrxFile, save

        from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM

        rng = ctx.rng_seeds
        self.seeds = []
        sls = qsdr_ras_streamlines(rng, 12, allow_empty=False)
        tg = nib.streamlines.Tractogram([s.astype(np.float32) for s in sls],
                                        affine_to_rasmm=np.eye(4))
        ref = nib.Nifti1Image(np.zeros(QSDR_DIM, np.int16), QSDR_AFFINE)
        p = ctx.work / "seeds" / "py.trx"
        trx = TrxFile.from_tractogram(tg, reference=ref)
        save(trx, str(p))
        trx.close()
        with zipfile.ZipFile(p) as z:
            members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
        self.seeds.append(dict(name="trxpy", members=members, deflate=False, folder=False))
        s2 = qsdr_ras_streamlines(rng, 10)
        self.seeds.append(dict(name="f16_u64_deflated",
                               members=trx_members(s2, "float16", "uint64"),
                               deflate=True, folder=False))
        self.seeds.append(dict(name="f64_u32_nofinal",
                               members=trx_members(qsdr_ras_streamlines(rng, 9), "float64",
                                                   "uint32", final=False),
                               deflate=False, folder=False))
        s4 = qsdr_ras_streamlines(rng, 8)
        nv = sum(len(s) for s in s4)
        extra = [("dpv/fa.float32", np.ones(nv, "<f4").tobytes()),
                 ("dps/algo.uint8", np.zeros(len(s4), "u1").tobytes()),
                 ("groups/g1.uint32", np.arange(3, dtype="<u4").tobytes())]
        self.seeds.append(dict(name="dpv_dps_groups", members=trx_members(s4, extra=extra),
                               deflate=False, folder=False))
        self.seeds.append(dict(name="empty", members=trx_members([]), deflate=False, folder=False))
        self.seeds.append(dict(name="folder", members=trx_members(qsdr_ras_streamlines(rng, 7)),
                               deflate=False, folder=True))
        for s in self.seeds:
            s["raw"] = self.pack(s["members"], s["deflate"], s["folder"])

    @staticmethod
    def pack(members, deflate, folder):
        if folder:
            out = {}
            for name, data in members:
                rel = _safe_rel(name)
                if rel is not None:
                    out[rel] = data
            return out
        return trx_zip(members, deflate)

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("input.trx", seed["raw"], {})

    def mutate(self, seed, rng):
        members = list(seed["members"])
        deflate, folder = seed["deflate"], seed["folder"]
        descs = []
        zip_bytes = False

        def find(prefix):
            return [i for i, (n, _) in enumerate(members) if n.startswith(prefix)]

        for _ in range(int(rng.integers(1, 3))):
            kind = _pick(rng, ["nb", "nb", "header_json", "header_text", "offsets", "offsets",
                               "positions", "positions", "rename", "add", "delete", "compress",
                               "folder", "zip_bytes", "member_bytes"])
            hi = find("header.json")
            if kind == "nb" and hi:
                i = hi[0]
                try:
                    h = json.loads(members[i][1])
                    key = _pick(rng, ["NB_VERTICES", "NB_STREAMLINES"])
                    old = h.get(key, 0) if isinstance(h.get(key), int) else 0
                    v = _pick(rng, [old + 1, old - 1, 0, -1, 2**32, 2**63, 2**64, str(old),
                                    float(old), old + 0.5, None, True, [old], 1e300,
                                    _Raw("9" * 5000)])
                    h[key] = v
                    members[i] = ("header.json", json_dumps(h, rng))
                    descs.append(f"{key} = {str(getattr(v, 'text', v))[:20]}")
                except (ValueError, UnicodeDecodeError, AttributeError):
                    pass
            elif kind == "header_json" and hi:
                data, d = mutate_json(members[hi[0]][1], rng,
                                      hot_keys=("NB_VERTICES", "NB_STREAMLINES", "DIMENSIONS",
                                                "VOXEL_TO_RASMM"))
                members[hi[0]] = ("header.json", data)
                descs.append(f"header.json: {d}")
            elif kind == "header_text" and hi:
                data, d = mutate_text(members[hi[0]][1], rng)
                members[hi[0]] = ("header.json", data)
                descs.append(f"header.json text: {d}")
            elif kind == "offsets" and find("offsets."):
                i = find("offsets.")[0]
                name, data = members[i]
                code = TRX_UINTS.get(name.split(".")[-1])
                if code and len(data) >= np.dtype(code).itemsize:
                    size = np.dtype(code).itemsize
                    arr = np.frombuffer(data[:len(data) // size * size],
                                        code).astype(object).tolist()
                    how = _pick(rng, ["set", "set", "drop", "add", "recode", "swap"])
                    if how == "set" and arr:
                        j = int(rng.integers(0, len(arr)))
                        arr[j] = int(_pick(rng, [0, 1, arr[-1], arr[-1] + 1, 2**32 - 1, 2**31,
                                                 max(arr[j] - 1, 0), arr[j] + 1]))
                        descs.append(f"offsets[{j}] = {arr[j]}")
                    elif how == "drop" and arr:
                        arr.pop(int(rng.integers(0, len(arr))))
                        descs.append("an offset removed")
                    elif how == "add":
                        arr.insert(int(rng.integers(0, len(arr) + 1)), int(_pick(rng, arr or [0])))
                        descs.append("an offset added")
                    elif how == "swap" and len(arr) > 2:
                        j = int(rng.integers(0, len(arr) - 1))
                        arr[j], arr[j + 1] = arr[j + 1], arr[j]
                        descs.append(f"offsets {j}, {j + 1} swapped")
                    if how == "recode":
                        new = _pick(rng, list(TRX_UINTS))
                        name = f"offsets.{new}"
                        code = TRX_UINTS[new]
                        descs.append(f"offsets recoded as {new}")
                    info = np.iinfo(np.dtype(code))
                    arr = [min(max(int(v), info.min), info.max) for v in arr]
                    members[i] = (name, np.array(arr, dtype=object).astype(code).tobytes()
                                  if arr else b"")
            elif kind == "positions" and find("positions."):
                i = find("positions.")[0]
                name, data = members[i]
                code = TRX_FLOATS.get(name.split(".")[-1])
                how = _pick(rng, ["coord", "coord", "face", "truncate", "extend", "recode"])
                if code and how in ("coord", "face", "recode"):
                    arr = np.frombuffer(data[:len(data) // np.dtype(code).itemsize
                                             * np.dtype(code).itemsize], code).astype(np.float64)
                    if how == "recode":
                        new = _pick(rng, list(TRX_FLOATS))
                        name, code = f"positions.3.{new}", TRX_FLOATS[new]
                        descs.append(f"positions recoded as {new}")
                    elif arr.size:
                        j = int(rng.integers(0, arr.size))
                        arr[j] = (_pick(rng, EDGE_FLOATS) if how == "coord"
                                  else float(int(rng.integers(-2, 100)) * 2 + 1))
                        descs.append(f"position value {j} = {arr[j]}")
                    with np.errstate(all="ignore"):
                        members[i] = (name, arr.astype(code).tobytes())
                elif how == "truncate" and data:
                    members[i] = (name, data[:int(rng.integers(0, len(data)))])
                    descs.append("positions truncated")
                elif how == "extend":
                    members[i] = (name, data + bytes(int(_pick(rng, [1, 2, 6, 12, 24]))))
                    descs.append("positions extended")
            elif kind == "rename" and members:
                i = int(rng.integers(0, len(members)))
                new = _pick(rng, ["positions.3.float32", "positions.3.float64",
                                  "positions.3.float16",
                                  "positions.3.int32", "positions.4.float32", "positions.float32",
                                  "positions.3.float32.bak", "offsets.uint32", "offsets.uint64",
                                  "offsets.int64", "offsets.uint16", "offsets", "header.json",
                                  "HEADER.json", "dir/positions.3.float32", "dpv/x.float32",
                                  "../positions.3.float32", "/positions.3.float32",
                                  "positions.3.float32/", "\u00e9.float32"])
                descs.append(f"member {members[i][0]!r} renamed {new!r}")
                members[i] = (new, members[i][1])
            elif kind == "add":
                src = _pick(rng, members) if members else ("x", b"")
                new = _pick(rng, [src[0], "positions.3.float64", "offsets.uint64", "dpv/x.float32",
                                  "dps/y.float64", "groups/z.uint32", "dpg/z/w.float32",
                                  "header.json", "dir/", "x" * 300])
                data = src[1] if rng.random() < 0.5 else rng.integers(
                    0, 256, int(_pick(rng, [0, 1, 8, 24])), dtype=np.uint8).tobytes()
                if new == "header.json" and rng.random() < 0.5:
                    data = b" " * (1 << 20) + b"{}"
                members.insert(int(rng.integers(0, len(members) + 1)), (new, data))
                descs.append(f"member {new[:40]!r} added ({len(data)} bytes)")
            elif kind == "delete" and members:
                i = int(rng.integers(0, len(members)))
                descs.append(f"member {members[i][0]!r} removed")
                del members[i]
            elif kind == "compress":
                deflate = not deflate
                descs.append(f"deflate {deflate}")
            elif kind == "folder":
                folder = not folder
                descs.append(f"folder {folder}")
            elif kind == "zip_bytes":
                zip_bytes = True
            elif kind == "member_bytes" and members:
                i = int(rng.integers(0, len(members)))
                data, d = mutate_bytes(members[i][1], rng)
                members[i] = (members[i][0], data)
                descs.append(f"{members[i][0]}: {d}")
        raw = self.pack(members, deflate, folder)
        if zip_bytes and not folder:
            raw, d = mutate_bytes(raw, rng)
            descs.append(f"zip: {d}")
        return Payload("input.trx", raw, {}), "; ".join(descs) or "repacked"

    def run(self, ctx, path, meta):
        from ltpa.formats.grids import QSDR_AFFINE

        def ref():
            from trx.trx_file_memmap import load

            scratch = ctx.work / "ref" / "ref.trx"
            if scratch.is_dir():
                shutil.rmtree(scratch)
            elif scratch.exists():
                scratch.unlink()
            if path.is_dir():
                shutil.copytree(path, scratch)
            else:
                shutil.copy(path, scratch)
            try:
                t = load(str(scratch))
                try:
                    n_header = int(t.header["NB_STREAMLINES"])
                    sls = [np.array(s, dtype=np.float64, copy=True).reshape(-1, 3)
                           for s in t.streamlines]
                finally:
                    t.close()
            except Exception as exc:  # noqa: BLE001
                raise NoReference(f"trx-python: {type(exc).__name__}") from None
            if not all(np.all(np.isfinite(s)) for s in sls):
                raise NoReference("trx-python: non-finite points")
            ref.n_header = n_header
            return "primary", ras_to_voxel_units(sls, QSDR_AFFINE), (1.0, 1.0, 1.0), False, FACE_TOL

        out = run_streamlines(ctx, path, "qsdr", ".trx", ref)
        if out == "equal":
            n = ctx.last_n_streamlines
            if n != getattr(ref, "n_header", n):
                raise WrongAnswer("streamlines", f"{n} streamlines, header NB_STREAMLINES "
                                  f"{ref.n_header}")
        return out

    def direct(self, path, meta):
        return (f"{sys.executable} -c \"from ltpa.jobs.pipeline import index_scan; "
                f"index_scan('{path}', '/tmp/fuzz_repro.pkl', space='qsdr')\"")


# --------------------------------------------------------------------------- the demo scan


def write_walks_trk(path, rng, n=30):
    """Random walks through the QSDR grid (voxmm), so random atlases give many ids."""
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
    from ltpa.formats.trkwrite import write_trk

    dim = np.array(QSDR_DIM) * 2.0
    sls = []
    for _ in range(n):
        k = int(rng.integers(2, 40))
        start = rng.uniform(0.1, 0.9, 3) * dim
        pts = start + np.cumsum(rng.normal(0, 3.0, (k, 3)), axis=0)
        sls.append(np.clip(pts, -4, dim + 4).astype(np.float32))
    write_trk(path, sls, QSDR_DIM, (2.0, 2.0, 2.0), "LPS", QSDR_AFFINE)


def make_study(ctx, n_scans=1) -> Path:
    from ltpa.demo.small import make_demo

    study = ctx.work / "study"
    make_demo(study, n_scans=n_scans, n_per_side=8, n_background=4)
    return study


# ----------------------------------------------------------------------------- nifti

# NIfTI-1 header fields: offset, struct code, count
N1 = {"sizeof_hdr": (0, "i", 1), "dim_info": (39, "B", 1), "dim": (40, "h", 8),
      "intent_p": (56, "f", 3), "intent_code": (68, "h", 1), "datatype": (70, "h", 1),
      "bitpix": (72, "h", 1), "slice_start": (74, "h", 1), "pixdim": (76, "f", 8),
      "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1),
      "slice_end": (120, "h", 1), "slice_code": (122, "B", 1), "xyzt_units": (123, "B", 1),
      "cal": (124, "f", 2), "qform_code": (252, "h", 1), "sform_code": (254, "h", 1),
      "quatern": (256, "f", 6), "srow": (280, "f", 12)}
N1_VALUES = {
    "sizeof_hdr": [348, 540, 0, -1, 1000, 0x5C010000],
    "dim": [0, 1, 2, 3, 4, 7, 8, -1, 32767, -32768, 69, 70, 78, 80, 94, 96],
    "datatype": [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048,
                 2304, 9999],
    "bitpix": [0, 1, 8, 16, 32, 64, 7, -1],
    "vox_offset": [0.0, 348.0, 352.0, 351.0, 353.0, 356.0, 1e9, -1.0, NAN, INF],
    "scl_slope": [0.0, 1.0, 2.0, -1.0, 0.5, NAN, INF, 1e30, 1e-30, 3.0],
    "scl_inter": [0.0, 1.0, -1.0, 0.5, NAN, INF, 1e30, 2.0**63, -100.0],
    "qform_code": [0, 1, 2, 3, 4, 5, -1, 32767],
    "sform_code": [0, 1, 2, 3, 4, 5, -1, 32767],
}


class NiftiFormat:
    name = "nifti"

    def setup(self, ctx):
        import networkx as nx
        import nibabel as nib

        from ltpa.demo.small import atlas_volume
        from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM

        rng = ctx.rng_seeds
        study = make_study(ctx)
        walks = ctx.work / "seeds" / "walks.trk"
        write_walks_trk(walks, rng)
        self.trks = {}
        for key, p in (("demo", study / "s1" / "s1.trk"), ("walks", walks)):
            sls, vs = nib_trk_voxmm(p.read_bytes())
            vox = np.unique(np.concatenate([np.floor(s / 2.0).astype(np.int64) for s in sls]),
                            axis=0)
            inside = np.all((vox >= 0) & (vox < np.array(QSDR_DIM)), axis=1)
            vox = vox[inside]
            flat = vox[:, 0] + QSDR_DIM[0] * (vox[:, 1] + QSDR_DIM[1] * vox[:, 2])  # Fortran order
            self.trks[key] = dict(path=p, sls=sls, vs=vs, flat=flat)
        self.graphml = study / "atlases" / "scale33.graphml"
        self.graphml_regions = sorted(int(n) for n in nx.read_graphml(str(self.graphml)).nodes)
        self.table = ctx.work / "seeds" / "regions.tsv"
        self.table.write_text("index\tname\n" + "".join(f"{i}\tr{i}\n" for i in range(1, 41)))
        self.table_regions = list(range(1, 41))

        blocks = np.zeros(QSDR_DIM, dtype=np.int64)
        lab = rng.integers(0, 41, (14, 16, 12))
        lab[rng.random(lab.shape) < 0.3] = 0
        blocks[:] = np.kron(lab, np.ones((6, 6, 6), dtype=np.int64))[:QSDR_DIM[0], :QSDR_DIM[1],
                                                                     :QSDR_DIM[2]]

        def img_bytes(data, dtype, version=1, big=False, slope=None, affine=None):
            cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
            hdr = (nib.Nifti1Header(endianness=">") if big else None) if version == 1 else None
            if affine is None:
                affine = QSDR_AFFINE if np.shape(data)[:3] == QSDR_DIM else np.eye(4)
            img = cls(np.asarray(data).astype(dtype), affine, header=hdr, dtype=np.dtype(dtype))
            raw = bytearray(img.to_bytes())
            if slope is not None and version == 1:
                struct.pack_into((">" if big else "<") + "f", raw, 112, slope)
            return bytes(raw)

        self.seeds = []

        def add(name, data, dtype, **kw):
            raw = img_bytes(data, dtype, **kw)
            version = kw.get("version", 1)
            big = kw.get("big", False)
            if version == 1:
                off = int(struct.unpack_from((">" if big else "<") + "f", raw, 108)[0])
            else:
                off = int(struct.unpack_from("<q", raw, 168)[0])
            self.seeds.append(dict(name=name, raw=raw, version=version, big=big, vox_offset=off,
                                   dtype=np.dtype(dtype).newbyteorder(">" if big else "<"),
                                   shape=np.shape(data)))

        add("demo33_int16", atlas_volume("scale33"), "int16")
        add("blocks_int32", blocks, "int32")
        add("blocks_uint8", blocks, "uint8")
        add("blocks_float32", blocks, "float32")
        add("blocks_int64", blocks, "int64")
        add("blocks_uint16", blocks, "uint16")
        add("blocks_float64", blocks, "float64")
        add("blocks_int16_slope2", blocks // 2, "int16", slope=2.0)
        add("blocks_nifti2", blocks, "int16", version=2)
        add("blocks_bigendian", blocks, "int16", big=True)
        # the QSDR grid stored in another voxel order (flipped x; x and y swapped)
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, QSDR_DIM[0] - 1
        add("blocks_flipped_x", blocks[::-1], "int16", affine=QSDR_AFFINE @ flip)
        swap = np.eye(4)[[1, 0, 2, 3]]
        add("blocks_xy_swapped", blocks.transpose(1, 0, 2), "int16", affine=QSDR_AFFINE @ swap)
        add("small_shape", blocks[:10, :12, :8], "int16")
        add("4d", blocks[..., None], "int16")
        add("2d", blocks[:, :, 30], "int16")

    def seed_name(self, seed):
        return seed["name"]

    def _meta(self, rng):
        return {"trk": _pick(rng, ["demo", "walks"]),
                "regions": _pick(rng, ["atlas", "atlas", "graphml", "table"])}

    def unmutated(self, seed, rng):
        gz = rng.random() < 0.5
        data = gzip.compress(seed["raw"], mtime=0) if gz else seed["raw"]
        return Payload("input.nii.gz" if gz else "input.nii", data, self._meta(rng))

    def mutate(self, seed, rng):
        b = bytearray(seed["raw"])
        e = ">" if seed["big"] else "<"
        descs = []
        meta = self._meta(rng)
        for _ in range(int(rng.integers(1, 4))):
            kind = _pick(rng, ["field", "field", "value", "value", "fill", "bytes", "truncate",
                               "extension", "magic"])
            if kind == "field" and seed["version"] == 1:
                name = _pick(rng, list(N1))
                off, code, cnt = N1[name]
                j = int(rng.integers(0, cnt))
                if name in N1_VALUES:
                    v = _pick(rng, N1_VALUES[name])
                elif code == "f":
                    v = _pick(rng, EDGE_FLOATS)
                elif code == "B":
                    v = int(rng.integers(0, 256))
                else:
                    v = int(_pick(rng, [0, 1, -1, 2, 32767, -32768]))
                try:
                    struct.pack_into(e + code, b, off + struct.calcsize(code) * j, v)
                    descs.append(f"{name}[{j}] = {v}")
                except (struct.error, OverflowError):
                    pass
            elif kind == "magic" and seed["version"] == 1:
                v = _pick(rng, [b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"XXXX"])
                b[344:348] = v
                descs.append(f"magic {v!r}")
            elif kind in ("value", "fill"):
                dt = seed["dtype"]
                off = seed["vox_offset"]
                n_vox = int(np.prod(seed["shape"]))
                flat = self.trks[meta["trk"]]["flat"]
                if kind == "value":
                    at = (np.array([int(_pick(rng, flat))]) if rng.random() < 0.7 and flat.size
                          else rng.integers(0, n_vox, 1))
                else:
                    c = int(_pick(rng, flat)) if flat.size else 0
                    at = np.unique(np.clip(c + np.arange(-40, 40) * int(rng.integers(1, 100)), 0,
                                           n_vox - 1))
                if dt.kind == "f":
                    v = _pick(rng, [NAN, INF, -INF, 0.5, -1.0, 1e30, 2.0**63, 2.0**64,
                                    9.2233720368547748e18, 16777217.0, 1e-30, -0.0, 83.0, 7.0])
                elif dt.kind == "u":
                    v = int(_pick(rng, [0, 1, 83, np.iinfo(dt).max,
                                        2**63 - 1 if dt.itemsize == 8 else 7,
                                        2**63 if dt.itemsize == 8 else 9]))
                else:
                    v = int(_pick(rng, [0, -1, 1, 83, 51, np.iinfo(dt).max, np.iinfo(dt).min]))
                with np.errstate(all="ignore"):
                    enc = np.array([v], dtype=dt).tobytes()
                for k in at:
                    p = off + int(k) * dt.itemsize
                    if p + dt.itemsize <= len(b):
                        b[p:p + dt.itemsize] = enc
                descs.append(f"{len(at)} voxel(s) = {v}")
            elif kind == "bytes":
                data, d = mutate_bytes(bytes(b), rng)
                b = bytearray(data)
                descs.append(d)
            elif kind == "truncate" and len(b):
                cut = int(_pick(rng, [int(rng.integers(0, len(b))), 348, 352, seed["vox_offset"],
                                      len(b) - 1]))
                del b[cut:]
                descs.append(f"truncate to {cut}")
            elif kind == "extension" and seed["version"] == 1 and len(b) >= 352:
                esize = int(_pick(rng, [8, 16, 0, 7, -8, 2**31 - 1, 24, 1_000_000, 17]))
                ecode = int(_pick(rng, [0, 2, 4, 6, 40, -1, 9999, 44]))
                content = _pick(rng, [b"\0" * 8, b'{"a": 1}' + b"\0" * 8,
                                      rng.integers(0, 256, 16, dtype=np.uint8).tobytes()])
                ext = struct.pack(e + "ii", esize, ecode) + content
                b[348:352] = b"\x01\0\0\0"
                b[352:352] = ext
                if rng.random() < 0.7:
                    struct.pack_into(e + "f", b, 108, float(seed["vox_offset"] + len(ext)))
                descs.append(f"extension esize {esize} ecode {ecode}")
        data = bytes(b)
        gz = rng.random() < 0.5
        name = "input.nii.gz" if gz else "input.nii"
        if gz:
            data = gzip.compress(data, compresslevel=int(rng.integers(1, 10)), mtime=0)
            if rng.random() < 0.1:
                data, d = mutate_bytes(data, rng)
                descs.append(f"compressed: {d}")
        if rng.random() < 0.03:
            name = "input.nii" if gz else "input.nii.gz"
            descs.append("suffix says the other compression")
        return Payload(name, data, meta), "; ".join(descs) or "unchanged"

    def run(self, ctx, path, meta):
        import nibabel as nib

        from ltpa.errors import LtpaError
        from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
        from ltpa.jobs.pipeline import label_scan

        ctx.clean_out()
        trk = self.trks[meta["trk"]]
        kw = {}
        if meta["regions"] == "graphml":
            kw["graphml_path"] = self.graphml
        elif meta["regions"] == "table":
            kw["labels_path"] = self.table
        out = ctx.out / "out.npy"
        try:
            label_scan(trk["path"], path, out, space="qsdr", scan_id="fuzz", atlas_key="fuzz", **kw)
        except LtpaError:
            return "rejected"
        ids = np.load(out)
        ctx.phase("reference")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = nib.load(str(path))
                data = np.asanyarray(img.dataobj)
                affine = img.affine
        except Exception as exc:  # noqa: BLE001
            ctx.note(f"no reference: nibabel {type(exc).__name__}")
            return "noref"
        # the grids the volume may be labeled in: as stored, and (when its affine is another
        # orientation of the QSDR grid) moved there by index, which ltpa may do
        grids = [("as stored", data)] if data.ndim == 3 else []
        if (data.ndim == 3 and affine is not None
                and not np.allclose(affine, QSDR_AFFINE, atol=1e-3)):
            from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

            try:
                ornt = ornt_transform(io_orientation(affine), io_orientation(QSDR_AFFINE))
                grids.append(("reoriented by its affine", apply_orientation(data, ornt)))
            except Exception:  # noqa: BLE001 - no orientation: only the volume as stored
                pass
        grids = [(how, g) for how, g in grids if tuple(g.shape) == tuple(QSDR_DIM)]
        problem = None
        if not grids:
            problem = f"has shape {data.shape}, not the trk grid {QSDR_DIM}"
        elif data.dtype.kind not in "iufb":
            problem = f"has data type {data.dtype}"
        elif data.size:
            if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
                problem = "has NaN or infinite values"
            elif data.dtype.kind == "f" and not np.array_equal(data, np.floor(data)):
                problem = "has non-integral values"
            elif float(data.min()) < 0:
                problem = f"has negative labels ({data.min()})"
            elif int(data.max()) > MAX_LABEL:
                problem = f"has label {int(data.max())} > 2^63 - 1"
        if problem:
            raise WrongAnswer("atlas", f"label_scan accepted an atlas that {problem}")
        regions = {"graphml": self.graphml_regions, "table": self.table_regions}.get(
            meta["regions"])
        if regions is None:
            regions = sorted(int(v) for v in np.unique(data) if v != 0)
        for how, g in grids:
            exp = label_ref(trk["sls"], g, trk["vs"], regions)
            if np.array_equal(ids, exp):
                if how != "as stored":
                    ctx.note("atlas labeled after reorienting it by its affine")
                return "equal"
        exp = label_ref(trk["sls"], grids[0][1], trk["vs"], regions)
        bad = int(np.flatnonzero(ids != exp)[0]) if ids.shape == exp.shape else -1
        raise WrongAnswer("label", f"connection ids differ from label_slow on the atlas "
                          f"{' or '.join(h for h, _ in grids)} (shape {ids.shape} vs "
                          f"{exp.shape}; first at {bad}: "
                          f"{ids[bad] if bad >= 0 else '-'} vs {exp[bad] if bad >= 0 else '-'})")

    def direct(self, path, meta):
        return None


# ----------------------------------------------------------------------------- graphml

GML_NS = "http://graphml.graphdrawing.org/xmlns"
GML_HEAD = f'<?xml version="1.0" encoding="utf-8"?>\n<graphml xmlns="{GML_NS}">\n'
ID_VALUES = ["0", "-1", "1", "01", " 7 ", "+3", "7.0", "1e3", "n5", "", "\u0663", "1_000",
             "9223372036854775807", "9223372036854775808", "99999999999999999999999", "9" * 5000,
             "\t8\n", "&#x33;", "x&amp;y", "5\u00a0", "12", "83", "0x10", "-0"]


def strict_int(text: str):
    """The integer an ASCII decimal spelling gives, None if it is not one, 'ambiguous' if only
    Python's int() reads it (underscores, non-ASCII digits or spaces)."""
    core = text.strip(" \t\r\n\f\v")
    if re.fullmatch(r"[+-]?[0-9]+", core):
        try:
            return int(core)
        except ValueError:  # more than 4300 digits: a number, bigger than any label
            return 2**64
    try:
        int(text.strip())
    except ValueError:
        return None
    return "ambiguous"


class GraphmlFormat:
    name = "graphml"

    def setup(self, ctx):
        import networkx as nx

        study = make_study(ctx)
        rng = ctx.rng_seeds
        self.seeds = []
        for scale in ("scale33", "scale60"):
            self.seeds.append(dict(name=scale,
                                   raw=(study / "atlases" / f"{scale}.graphml").read_bytes()))

        def nxw(name, g):
            p = ctx.work / "seeds" / f"{name}.graphml"
            nx.write_graphml(g, str(p))
            self.seeds.append(dict(name=name, raw=p.read_bytes()))

        g = nx.DiGraph()
        for i in rng.permutation(np.arange(1, 13)):
            g.add_node(int(i), name=f"r{i}", size=float(i) / 3, flag=bool(i % 2))
        for _ in range(15):
            a, c = (int(x) for x in rng.integers(1, 13, 2))
            g.add_edge(a, c, weight=float(rng.random()), count=int(rng.integers(0, 9)))
        g.graph["atlas"] = "fuzz"
        nxw("directed_attrs", g)
        m = nx.MultiGraph()
        m.add_edges_from([("3", "5"), ("3", "5"), ("5", "9")])
        nxw("multigraph", m)
        nodes = "".join(f'<node id="{i}"/>' for i in (4, 2, 9, 2))
        self.seeds += [
            dict(name="minimal", raw=_enc(GML_HEAD + f'<graph edgedefault="undirected">{nodes}'
                                          '<edge source="4" target="9"/></graph></graphml>\n')),
            dict(name="no_namespace", raw=b'<graphml><graph><node id="1"/><node id="2"/></graph>'
                                          b"</graphml>"),
            dict(name="yed", raw=_enc(
                GML_HEAD.replace(">\n", ' xmlns:y="http://www.yworks.com/xml/graphml">\n', 1)
                + '<key for="node" id="d0" yfiles.type="nodegraphics"/><graph id="G" '
                  'edgedefault="directed"><node id="5"><data key="d0"><y:ShapeNode><y:NodeLabel>'
                  'five</y:NodeLabel></y:ShapeNode></data></node><node id="6"/></graph>'
                  '</graphml>')),
            dict(name="nested", raw=_enc(GML_HEAD + '<graph edgedefault="undirected"><node id="1">'
                                         '<graph id="s" edgedefault="undirected"><node id="2"/>'
                                         '</graph></node><node id="3"/></graph></graphml>')),
            dict(name="hyperedge", raw=_enc(GML_HEAD + '<graph edgedefault="undirected">'
                                            '<node id="1"/>'
                                            '<node id="2"/><hyperedge><endpoint node="1"/>'
                                            '<endpoint node="2"/></hyperedge></graph></graphml>')),
            dict(name="edge_only_node", raw=_enc(GML_HEAD + '<graph edgedefault="undirected">'
                                                 '<node id="1"/><edge source="1" target="77"/>'
                                                 '</graph></graphml>')),
            dict(name="two_graphs", raw=_enc(GML_HEAD + '<graph edgedefault="undirected">'
                                             '<node id="8"/></graph>'
                                             '<graph edgedefault="undirected"><node id="9"/>'
                                             '</graph></graphml>')),
            dict(name="entities", raw=_enc('<?xml version="1.0"?>\n'
                                           '<!DOCTYPE graphml [<!ENTITY n "5">]>\n'
                                           f'<graphml xmlns="{GML_NS}">'
                                           '<graph edgedefault="undirected">'
                                           '<node id="&n;"/><node id="6"/></graph></graphml>')),
            dict(name="typed_keys", raw=_enc(
                GML_HEAD + '<key id="k" for="node" attr.name="w" attr.type="int">'
                '<default>3</default>'
                '</key><graph edgedefault="undirected"><node id="10"><data key="k">4</data></node>'
                '<node id="11"/></graph></graphml>')),
        ]

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("input.graphml", seed["raw"], {})

    def mutate(self, seed, rng):
        data, desc = mutation_rounds(seed["raw"], rng, 0.45, self._change)
        return Payload("input.graphml", data, {}), desc or "unchanged"

    def _change(self, data, rng, descs):
        """One change of this format's own kind (appended to descs); the new data."""
        kind = _pick(rng, ["id", "id", "dup_node", "del_node", "edge", "nest", "hyperedge",
                           "namespace", "entity", "key_type", "data", "encoding", "comment",
                           "deep"])
        ids = list(re.finditer(rb'id="([^"]*)"', data))
        nodes = list(re.finditer(rb"<node\b[^>]*/>|<node\b[^>]*>.*?</node>", data, re.S))
        close = data.rfind(b"</graph>")
        if kind == "id" and ids:
            m = _pick(rng, ids)
            v = _enc(_pick(rng, ID_VALUES))
            data = data[:m.start(1)] + v + data[m.end(1):]
            descs.append(f"id {m.group(1)[:10]!r} -> {v[:20]!r}")
        elif kind == "dup_node" and nodes:
            m = _pick(rng, nodes)
            data = data[:m.end()] + m.group(0) + data[m.end():]
            descs.append("node duplicated")
        elif kind == "del_node" and nodes:
            m = _pick(rng, nodes)
            data = data[:m.start()] + data[m.end():]
            descs.append("node removed")
        elif kind in ("edge", "nest", "hyperedge") and close >= 0:
            a = _enc(_pick(rng, ID_VALUES + ["1", "2", "5"]))
            c = _enc(_pick(rng, ["1", "2", "900", "5", "abc"]))
            ins = {"edge": b'<edge source="' + a + b'" target="' + c + b'"/>',
                   "nest": b'<node id="900"><graph id="sub"><node id="' + a
                           + b'"/></graph></node>',
                   "hyperedge": b'<hyperedge><endpoint node="' + a + b'"/></hyperedge>'}[kind]
            data = data[:close] + ins + data[close:]
            descs.append(f"{kind} with {a[:20]!r}")
        elif kind == "namespace":
            new = _pick(rng, [b"", b"http://graphml.graphdrawing.org/xmlns/", b"urn:x",
                              b"http://graphml.graphdrawing.org/XMLNS"])
            data = data.replace(_enc(GML_NS), new, 1)
            descs.append(f"namespace -> {new!r}")
        elif kind == "entity":
            levels = int(rng.integers(1, 6))
            decl = b'<!ENTITY e0 "7">' + b"".join(
                b"<!ENTITY e%d \"%s\">" % (k, b"&e%d;" % (k - 1) * 10)
                for k in range(1, levels))
            body = data.split(b"?>", 1)[-1] if data.startswith(b"<?xml") else data
            body = re.sub(rb"<!DOCTYPE[^]]*\]>", b"", body)
            if ids:
                body = body.replace(ids[0].group(0), b'id="&e%d;"' % (levels - 1), 1)
            data = b"<!DOCTYPE graphml [" + decl + b"]>\n" + body
            descs.append(f"entity expansion 10^{levels - 1}")
        elif kind == "key_type":
            new = _pick(rng, [b"int", b"long", b"float", b"double", b"boolean", b"weird", b""])
            data = re.sub(rb'attr\.type="[^"]*"', b'attr.type="' + new + b'"', data, count=1)
            descs.append(f"attr.type -> {new!r}")
        elif kind == "data":
            ms = list(re.finditer(rb"<data key=\"[^\"]*\">([^<]*)</data>", data))
            if ms:
                m = _pick(rng, ms)
                v = _enc(_pick(rng, NUMBER_TEXTS + ["true", "yes", "\u00e9"]))
                data = data[:m.start(1)] + v + data[m.end(1):]
                descs.append(f"data -> {v[:20]!r}")
        elif kind == "encoding":
            enc = _pick(rng, [b"utf-16", b"latin-1", b"ascii", b"bogus", b"utf-8"])
            if data.startswith(b"<?xml"):
                data = re.sub(rb'encoding="[^"]*"', b'encoding="' + enc + b'"', data, count=1)
            else:
                data = b'<?xml version="1.0" encoding="' + enc + b'"?>\n' + data
            descs.append(f"encoding {enc!r}")
        elif kind == "comment" and close >= 0:
            ins = _pick(rng, [b"<!-- <node id=\"99\"/> -->", b"<![CDATA[<node id='98'/>]]>",
                              b"<?pi x?>", b"<desc>\xc3\xa9</desc>"])
            data = data[:close] + ins + data[close:]
            descs.append(f"inserted {ins[:20]!r}")
        elif kind == "deep" and close >= 0:
            k = int(_pick(rng, [100, 10_000, 200_000]))
            data = data[:close] + b"<a>" * k + b"</a>" * k + data[close:]
            descs.append(f"{k} nested elements")
        return data

    def run(self, ctx, path, meta):
        from ltpa.errors import LtpaError
        from ltpa.formats.regions import regions_from_graphml

        try:
            got = regions_from_graphml(path)
            accepted = True
        except LtpaError:
            got, accepted = None, False
        ctx.phase("reference")
        try:
            import networkx as nx

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nodes = list(nx.read_graphml(str(path)).nodes)
        except Exception as exc:  # noqa: BLE001
            ctx.note(f"no reference: networkx {type(exc).__name__}")
            return "noref" if accepted else "rejected"
        values = [strict_int(str(n)) for n in nodes]
        if any(v == "ambiguous" for v in values):
            ctx.note("reference ambiguous: a node id only Python's int() reads",
                     repr([str(n)[:20] for n, v in zip(nodes, values) if v == "ambiguous"][:3]))
            return "noref" if accepted else "rejected"
        if (not values or any(v is None for v in values) or min(values) <= 0
                or max(values) > MAX_LABEL):
            want = None
        else:
            want = sorted(set(values))
        if (accepted and (want is None or list(map(int, got)) != want)) or \
                (not accepted and want is not None):
            # networkx adds a node for each edge endpoint that no <node> declares (and 'None'
            # for a missing endpoint); a mismatch from those alone is one known cause
            import xml.etree.ElementTree as ET

            try:
                root = ET.parse(str(path)).getroot()
                elems = list(root.iter())
                graph = next((e for e in root if str(e.tag).rsplit("}", 1)[-1] == "graph"), None)
                kids = list(graph) if graph is not None else []
                # what networkx reads: the first graph's own <node> and <edge> children
                ends = {str(e.get(a)) for e in kids if str(e.tag).rsplit("}", 1)[-1] == "edge"
                        for a in ("source", "target")}
                declared = {e.get("id") for e in kids if str(e.tag).rsplit("}", 1)[-1] == "node"}
            except Exception:  # noqa: BLE001
                elems, ends, declared = [], set(), set()
            undeclared = [str(n) for n in nodes if str(n) not in declared]
            nested = [e for e in elems if str(e.tag).rsplit("}", 1)[-1] == "node"
                      and any(str(c.tag).rsplit("}", 1)[-1] == "node" for c in e.iter()
                              if c is not e)]
            verdict = "accepted" if accepted else "rejected"
            shown = sorted(int(v) for v in got)[:8] if accepted else ""
            if nested:
                raise WrongAnswer("regions:nodes inside nodes", f"{verdict} {shown} (n="
                                  f"{len(got) if accepted else 0}); networkx reads only a graph's "
                                  f"own <node> children: {len(nodes)} nodes; <node id="
                                  f"{nested[0].get('id')!r}> holds other <node>s")
            if undeclared and all(n in ends for n in undeclared):
                raise WrongAnswer("regions:edge-only nodes", f"{verdict} {shown}; networkx "
                                  f"also has nodes {undeclared[:4]} that only edges name")
        if accepted and want is None:
            raise WrongAnswer("regions", f"accepted node ids {np.asarray(got)[:6].tolist()}, but "
                              f"networkx reads ids {[str(n)[:20] for n in nodes[:6]]}, not all "
                              f"positive integers")
        if accepted and list(map(int, got)) != want:
            raise WrongAnswer("regions", f"regions {np.asarray(got)[:8].tolist()} "
                              f"(n={len(got)}), networkx's node ids give {want[:8]} "
                              f"(n={len(want)})")
        if not accepted and want is not None:
            raise WrongAnswer("regions", f"rejected a graphml whose networkx node ids are the "
                              f"positive integers {want[:8]}")
        return "equal" if accepted else "rejected"

    def direct(self, path, meta):
        return (f"{sys.executable} -c \"from ltpa.formats.regions import regions_from_graphml; "
                f"print(regions_from_graphml('{path}'))\"")


# ----------------------------------------------------------------------------- label tables


def table_ref(data: bytes):
    """Region indices of a label table by the documented rules, written out here.

    UTF-8 (undecodable bytes replaced; a leading BOM is not content); lines end at \\n, \\r\\n
    or \\r; blank lines and lines starting with '#' are skipped; the first column ends at the
    first comma, tab or space and may be quoted; a line whose first column is not an integer
    is a header row if no index came before it and it is one of the first 5 lines, else an
    error; a header row with a cell ``index`` (any case; cells split at tabs, else commas,
    else white space, as BIDS dseg.tsv columns come in any order) makes that column the
    index from then on; negative or > 2^63-1 indices are errors; 0 is left out; no index is
    an error.
    Returns (sorted ids | None for an error, ambiguous: bool).
    """
    text = data.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    ids, ambiguous, index_col = [], False, 0
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        s = line.strip(" \t\f\v")
        if s != line.strip():
            ambiguous = True  # other whitespace at the ends (Python's strip removes it)
        if not s or s.startswith("#"):
            continue
        m = re.match(r"[^,\t ]*", s)
        if any(ch.isspace() for ch in m.group(0)):
            ambiguous = True  # other whitespace in the first column (Python's strip removes it)
        token = m.group(0).strip('"')
        if index_col:
            cells = _table_cells(s)
            token = cells[index_col] if index_col < len(cells) else ""
            ambiguous = True  # a rare header: not compared cell by cell
        v = strict_int(token)
        if v == "ambiguous":
            ambiguous, v = True, None
        if v is None:
            if not ids and lineno <= 5:
                header = [c.lower() for c in _table_cells(s)]
                if "index" in header:
                    index_col = header.index("index")
                continue
            return None, ambiguous
        if v < 0 or v > MAX_LABEL:
            return None, ambiguous
        if v:
            ids.append(v)
    return (sorted(set(ids)) or None), ambiguous


def _table_cells(line: str) -> list:
    if "\t" in line:
        return [c.strip().strip('"') for c in line.split("\t")]
    if "," in line:
        return [c.strip().strip('"') for c in line.split(",")]
    return line.split()


class LabelsFormat:
    name = "labels"

    def setup(self, ctx):
        rng = ctx.rng_seeds
        idx = sorted(set(int(x) for x in rng.integers(1, 200, 30)))
        rows = [(i, f"region_{i}") for i in idx]
        self.seeds = [
            dict(name="tsv_header", raw=_enc("index\tname\n0\tUnknown\n"
                                             + "".join(f"{i}\t{n}\n" for i, n in rows))),
            dict(name="csv_header", raw=_enc("index,name\n"
                                             + "".join(f"{i},{n}\n" for i, n in rows))),
            dict(name="csv_quoted", raw=_enc('"index","name"\n'
                                             + "".join(f'"{i}","{n}"\n' for i, n in rows))),
            dict(name="tsv_noheader_crlf", raw=_enc("".join(f"{i}\t{n}\r\n" for i, n in rows))),
            dict(name="freesurfer_lut", raw=_enc(
                "#$Id: FreeSurferColorLUT.txt\n\n#No. Label Name:                R   G   B   A\n\n"
                "0   Unknown                        0   0   0   0\n"
                + "".join(f"{i:<4}{n:<31}{i % 255:<4}{(3 * i) % 255:<4}20  0\n" for i, n in rows))),
            dict(name="mrtrix_lut", raw=_enc("# MRtrix LUT\n" + "".join(
                f"{i}    {n}    200 100 50 255\n" for i, n in rows))),
            dict(name="bids_dseg", raw=_enc("index\tname\tabbreviation\tcolor\n" + "".join(
                f"{i}\t{n}\tR{i}\t#a0b0c0\n" for i, n in rows))),
            dict(name="bids_dseg_name_first", raw=_enc("name\tindex\n" + "".join(
                f"{n}\t{i}\n" for i, n in rows))),
            dict(name="big_ids",
                 raw=_enc("index,name\n1,a\n9223372036854775807,max\n4294967296,b\n")),
        ]

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("input.tsv", seed["raw"], {})

    def mutate(self, seed, rng):
        data, desc = mutation_rounds(seed["raw"], rng, 0.5, self._change)
        return Payload("input.tsv", data, {}), desc or "unchanged"

    def _change(self, data, rng, descs):
        """One change of this format's own kind (appended to descs); the new data."""
        lines = data.split(b"\n")
        kind = _pick(rng, ["index", "index", "sep", "insert", "bom", "latin1", "quote"])
        i = int(rng.integers(0, len(lines)))
        if kind == "index":
            m = re.match(rb'\s*"?([^,\t "]*)', lines[i])
            v = _enc(_pick(rng, ID_VALUES + ["18446744073709551615", "-9223372036854775808"]))
            lines[i] = lines[i][:m.start(1)] + v + lines[i][m.end(1):]
            descs.append(f"line {i} index -> {v[:20]!r}")
        elif kind == "sep":
            new = _pick(rng, [b",", b"\t", b"  ", b";", b"\x0b", b"|", b", "])
            lines[i] = re.sub(rb"[,\t ]+", new, lines[i], count=1)
            descs.append(f"line {i} separator -> {new!r}")
        elif kind == "insert":
            at = int(_pick(rng, [0, 1, 2, 4, 5, 6, i]))
            new = _pick(rng, [b"index,name", b"# comment", b"", b"label\tname", b"No. Name",
                              b"   ", b"#", b'"1"', b"x,1"])
            lines.insert(min(at, len(lines)), new)
            descs.append(f"line {new!r} inserted at {at}")
        elif kind == "bom":
            lines[0] = b"\xef\xbb\xbf" + lines[0]
            descs.append("UTF-8 BOM")
        elif kind == "latin1":
            lines[i] = _pick(rng, [b"\xe9", b"\xff\xfe", b"\xc3"]) + lines[i]
            descs.append(f"undecodable byte before line {i}")
        elif kind == "quote":
            lines[i] = b'"' + lines[i]
            descs.append(f"quote before line {i}")
        return b"\n".join(lines)

    def run(self, ctx, path, meta):
        from ltpa.errors import LtpaError
        from ltpa.formats.regions import regions_from_table

        try:
            got = [int(v) for v in regions_from_table(path)]
            accepted = True
        except LtpaError:
            got, accepted = None, False
        data = path.read_bytes()
        want, ambiguous = table_ref(data)
        if got != want and not ambiguous:
            self._why(ctx, data, got, want)
        if ambiguous and got != want:
            ctx.note("reference ambiguous: non-ASCII digits/whitespace or underscores")
            return "noref" if accepted else "rejected"
        if accepted and want is None:
            raise WrongAnswer("regions", f"accepted {got[:8]} (n={len(got)}); the rules say the "
                              f"table is invalid")
        if accepted and got != want:
            raise WrongAnswer("regions", f"regions {got[:8]} (n={len(got)}), the rules give "
                              f"{want[:8]} (n={len(want)}); "
                              f"missing {sorted(set(want) - set(got))[:5]}, "
                              f"extra {sorted(set(got) - set(want))[:5]}")
        if not accepted and want is not None:
            raise WrongAnswer("regions", f"rejected a table the rules read as {want[:8]} "
                              f"(n={len(want)})")
        return "equal" if accepted else "rejected"

    def _why(self, ctx, data, got, want):
        """A WrongAnswer named by its cause, when a known one explains the difference."""
        from ltpa.errors import LtpaError
        from ltpa.formats.regions import regions_from_table

        side = ctx.work / "ref" / "unbommed.tsv"
        if data.startswith(b"\xef\xbb\xbf"):
            side.write_bytes(data[3:])
            try:
                unbommed = [int(v) for v in regions_from_table(side)]
            except LtpaError:
                unbommed = None
            if unbommed == want:
                raise WrongAnswer("regions:UTF-8 BOM", f"with a BOM: {str(got)[:60]}; without: "
                                  f"{str(want)[:60]} (the first line is taken for a header)")
        if re.search(rb"[0-9]{4301,}", data):
            raise WrongAnswer("regions:index of 4300+ digits", f"got {str(got)[:60]}, the rules "
                              f"give {str(want)[:60]} (int() refuses it: read as a header row)")

    def direct(self, path, meta):
        return (f"{sys.executable} -c \"from ltpa.formats.regions import regions_from_table; "
                f"print(regions_from_table('{path}'))\"")


# ----------------------------------------------------------------------------- sidecars


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=True)


class SidecarFormat:
    name = "sidecar"
    HOT = ("path", "relpath", "size", "mtime_ns", "sha256", "fingerprint", "sidecar_version",
           "kind", "params", "inputs", "output", "scan_id", "space", "region_ids", "atlas",
           "metadata_sha256", "connection_ids_start_at", "legacy_dsi2_mni_offset", "stats", "build")

    def setup(self, ctx):
        from ltpa.jobs.pipeline import index_scan, label_scan
        from ltpa.study import staleness
        from ltpa.study.spec import JobSpec

        def _abs(p):
            return os.path.abspath(str(p))

        def _inputs(**kw):
            return {k: _abs(v) for k, v in kw.items() if v is not None}

        study = make_study(ctx)
        self.study = study
        s = study / "s1"
        trk = s / "s1.trk"
        table = study / "atlases" / "scale60.tsv"
        table.write_text("index\tname\n" + "".join(f"{i}\tr{i}\n" for i in range(1, 130)))
        meta = {"scan_group": "control", "attributes": {"age": 30}}
        pkl, ktrk = s / "s1.pkl", s / "s1.pkl.trk"
        index_scan(trk, pkl, space="qsdr", scan_id="s1", properties=meta, trk_out=ktrk)
        npy33, npy60 = s / "scale33.npy", s / "scale60.npy"
        label_scan(trk, s / "s1.scale33.QSDR.nii.gz", npy33,
                   graphml_path=study / "atlases" / "scale33.graphml", scan_id="s1",
                   atlas_key="scale33")
        label_scan(trk, s / "s1.scale60.QSDR.nii.gz", npy60, labels_path=table, scan_id="s1",
                   atlas_key="scale60")
        # the specs as pipeline.index_scan / label_scan build them
        inputs = _inputs(trk_file=trk)
        self.specs = {
            "pkl": JobSpec("index", _abs(pkl), inputs, scan_id="s1", space="qsdr",
                           legacy_dsi2_mni_offset=False, properties=dict(meta)),
            "key_trk": JobSpec("export", _abs(ktrk), inputs, scan_id="s1", space="qsdr",
                               legacy_dsi2_mni_offset=False),
            "npy33": JobSpec("label", _abs(npy33), _inputs(
                trk_file=trk, volume_path=s / "s1.scale33.QSDR.nii.gz",
                graphml_path=study / "atlases" / "scale33.graphml"),
                scan_id="s1", atlas="scale33", space="qsdr", start=1),
            "npy60": JobSpec("label", _abs(npy60), _inputs(
                trk_file=trk, volume_path=s / "s1.scale60.QSDR.nii.gz", labels_path=table),
                scan_id="s1", atlas="scale60", space="qsdr", start=1),
        }
        verdicts = staleness.judge_all(list(self.specs.values()))
        bad = [(k, v) for k, v in zip(self.specs, verdicts) if v.status != staleness.OK]
        if bad:
            raise RuntimeError(f"fuzz setup: fresh outputs are not ok: {bad}")
        self.seeds = []
        for key, spec in self.specs.items():
            side = Path(spec.output + ".json")
            raw = side.read_bytes()
            self.seeds.append(dict(name=key, raw=raw, side=side, orig=json.loads(raw)))

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("input.json", seed["raw"], {"target": seed["name"]})

    def mutate(self, seed, rng):
        data, d = mutate_json_or_text(seed["raw"], rng, self.HOT)
        return Payload("input.json", data, {"target": seed["name"]}), d

    def to_saved(self, data: bytes) -> bytes:
        return data.replace(_enc(str(self.study)), _enc(STUDY_TOKEN))

    def from_saved(self, data: bytes) -> bytes:
        return data.replace(_enc(STUDY_TOKEN), _enc(str(self.study)))

    def write(self, ctx, payload: Payload) -> Path:
        seed = next(s for s in self.seeds if s["name"] == payload.meta["target"])
        for s in self.seeds:
            if s is not seed:
                s["side"].write_bytes(s["raw"])
        seed["side"].write_bytes(payload.data)
        return seed["side"]

    def run(self, ctx, path, meta):
        from ltpa.study import sidecar, staleness

        seed = next(s for s in self.seeds if s["name"] == meta["target"])
        spec = self.specs[meta["target"]]
        verdict = staleness.judge_all([spec])[0]
        body, why = sidecar.read(spec.output)
        sidecar.stats(spec.output)
        if body is not None and "region_ids" in body:
            from ltpa.errors import LtpaError

            try:  # what a query decodes with: checked against the list, or a clear error
                ids = sidecar.region_ids(body, spec.output)
            except LtpaError:
                pass
            else:
                if canonical(ids.tolist()) != canonical(seed["orig"].get("region_ids")) and \
                        "graphml_path" in spec.inputs and canonical(body.get("inputs")) == \
                        canonical(seed["orig"].get("inputs")):
                    raise WrongAnswer("region_ids", "edited region_ids decoded without error")
        try:
            parsed = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            parsed = None
        orig = seed["orig"]
        if parsed is not None and canonical(parsed) == canonical(orig):
            want, rule = staleness.OK, "the original sidecar"
        elif body is None:
            want, rule = staleness.OUT_OF_DATE, f"a sidecar read() refuses ({why})"
        elif any(body["params"].get(k) != v for k, v in spec.params().items()):
            want, rule = staleness.OUT_OF_DATE, "params that differ from the job's"
        elif all(canonical(body.get(k)) == canonical(orig.get(k))
                 for k in ("output", "inputs", "params")):
            want, rule = staleness.OK, "output, inputs and params as written"
        else:
            return "noref"
        if verdict.status != want:
            raise WrongAnswer("verdict", f"{rule} gives {verdict.status!r} "
                              f"({verdict.reason[:120]}), expected {want!r}")
        return "equal"

    def direct(self, path, meta):
        return None


# ----------------------------------------------------------------------------- local_data.json


class _StudyJson:
    """A JSON file of a demo study (``self.study``) mutated as JSON and text; saved inputs
    name the study's folder by a token, so they replay in another one."""

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("input.json", seed["raw"], {})

    def mutate(self, seed, rng):
        data, d = mutate_json_or_text(seed["raw"], rng, self.HOT)
        return Payload("input.json", data, {}), d

    def to_saved(self, data: bytes) -> bytes:
        return data.replace(_enc(str(self.study)), _enc(STUDY_TOKEN))

    def from_saved(self, data: bytes) -> bytes:
        return data.replace(_enc(STUDY_TOKEN), _enc(str(self.study)))


class LocalDataFormat(_StudyJson):
    name = "local_data"
    HOT = ("scan_id", "scan_group", "trk_file", "pkl_path", "pkl_trk_path", "track_labels",
           "numpy_path", "volume_path", "graphml_path", "labels_path", "qsdr_volume_path",
           "b0_volume_path", "fib_file", "trk_space", "reference_volume", "track_scalars",
           "txt_path", "attributes", "name")

    def setup(self, ctx):
        study = make_study(ctx, n_scans=2)
        self.study = study
        base = json.loads((study / "local_data.json").read_text())
        self.seeds = [dict(name="demo", raw=_enc(json.dumps(base, indent=2)))]
        v = copy.deepcopy(base)
        v[0]["track_labels"][1] = {"name": "table", "labels_path": "atlases/scale60.tsv",
                                   "numpy_path": "s1/table.npy",
                                   "volume_path": "s1/s1.scale60.QSDR.nii.gz"}
        v[0]["track_scalars"] = [{"name": "fa", "txt_path": "s1/fa.txt", "numpy_path": "s1/fa.npy"}]
        self.seeds.append(dict(name="labels_scalars", raw=_enc(json.dumps(v, indent=2))))
        v = copy.deepcopy(base)
        v[1].update({"trk_space": "native", "trk_file": "s2/s2.tck",
                     "reference_volume": "s2/s2.scale33.QSDR.nii.gz", "fib_file": "s2/s2.fib.gz"})
        v[1]["track_labels"][0]["b0_volume_path"] = "s2/b0_atlas.nii.gz"
        v[1]["track_labels"][0]["volume_path"] = "s2/mapped.nii.gz"
        self.seeds.append(dict(name="native_tck_b0", raw=_enc(json.dumps(v, indent=2))))
        v = copy.deepcopy(base)
        lab = v[0]["track_labels"][0]
        lab["qsdr_volume_path"] = lab.pop("volume_path")
        v[0]["trk_file"] = str(study / "s1" / "s1.trk")
        v[1]["trk_space"] = "mni"
        self.seeds.append(dict(name="old_names_abs", raw=_enc(json.dumps(v, indent=2))))

    def write(self, ctx, payload: Payload) -> Path:
        path = self.study / "fuzz_local_data.json"
        path.write_bytes(payload.data)
        return path

    def run(self, ctx, path, meta):
        from ltpa.errors import LtpaError
        from ltpa.study.study import load_study

        try:
            study = load_study(path)
        except LtpaError:
            return "rejected"
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise WrongAnswer("study", f"accepted a file Python's json cannot read ({exc})") \
                from None
        problem = None
        if not isinstance(data, list) or not data:
            problem = "the top level is not a non-empty list"
        elif not all(isinstance(s, dict) for s in data):
            problem = "a scan entry is not an object"
        else:
            ids = [s.get("scan_id") for s in data]
            if not all(isinstance(i, str) and i and not re.search(r"[/\\\n\t]", i) for i in ids):
                problem = f"scan_ids {[str(i)[:20] for i in ids]}"
            elif len(set(ids)) != len(ids):
                problem = "duplicate scan_id"
            elif not all(isinstance(s.get("scan_group"), str) for s in data):
                problem = "a scan_group is not a string"
            elif not all(s.get("trk_space", "qsdr") in ("qsdr", "mni", "native") for s in data):
                problem = "a trk_space outside qsdr/mni/native"
            elif [s.scan_id for s in study.scans] != ids:
                problem = (f"the Study's scans {[s.scan_id for s in study.scans][:4]} are not "
                           f"the JSON's")
        if problem:
            raise WrongAnswer("study", f"load_study accepted a local_data.json where {problem}")
        return "equal"

    def direct(self, path, meta):
        return (f"{sys.executable} -c \"from ltpa.study.study import load_study; "
                f"load_study('{path}')\"")


# ----------------------------------------------------------------------------- job server requests


def _json_depth_slow(v) -> int:
    if isinstance(v, list):
        return 1 + max((_json_depth_slow(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_json_depth_slow(x) for x in v.values()), default=0)
    return 0


class RequestFormat:
    """What a job server child reads from a connection: the framed JSON request and the
    client's descriptors (``wire.recv_request`` over a socketpair, then
    ``parse_request``)."""

    name = "request"
    HOT = ("argv", "cwd", "env", "PATH", "HOME", "LANG", "TMPDIR", "LTPA_JOB_SERVER")

    def setup(self, ctx):
        from ltpa.jobs.wire import job_environment

        spec = json.dumps({"step": "index", "output": "/study/s1/s1.pkl",
                           "inputs": {"trk_file": "/study/s1/s1.trk"}, "scan_id": "s1"})
        env = job_environment({**os.environ, "LANG": "C.UTF-8", "TMPDIR": "/tmp",
                               "LTPA_JOB_SERVER": "1", "OMP_NUM_THREADS": "1"})
        base = {"argv": ["--log", "/study/logs/s1.log", spec], "cwd": "/study", "env": env}
        self.seeds = [dict(name="index", raw=_enc(json.dumps(base))),
                      dict(name="empty_env", raw=_enc(json.dumps({**base, "env": {}})))]

    def seed_name(self, seed):
        return seed["name"]

    def unmutated(self, seed, rng):
        return Payload("request.bin", seed["raw"], {"fds": 3, "length": "exact"})

    def mutate(self, seed, rng):
        r = rng.random()
        if r < 0.1:  # deep nesting somewhere in a field
            depth = int(_pick(rng, [63, 64, 65, 1000, 100_000]))
            body = _enc('{"argv": ' + "[" * depth + "]" * depth + ', "cwd": "/", "env": {}}')
            how = f"argv nested {depth} deep"
        else:
            body, how = mutate_json_or_text(seed["raw"], rng, self.HOT)
        meta = {"fds": int(_pick(rng, [3, 3, 3, 0, 1, 2, 4])),
                "length": str(_pick(rng, ["exact"] * 6 + ["short", "long", "huge"]))}
        return Payload("request.bin", body, meta), f"{how}; fds={meta['fds']} {meta['length']}"

    def to_saved(self, data: bytes) -> bytes:
        return data

    def from_saved(self, data: bytes) -> bytes:
        return data

    def run(self, ctx, path, meta):
        import socket
        import threading

        from ltpa.jobs import wire

        body = path.read_bytes()
        n = {"exact": len(body), "short": max(0, len(body) - 3), "long": len(body) + 5,
             "huge": 2**32 - 1}[meta.get("length", "exact")]
        frame = struct.pack("!I", n) + body
        send_fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(meta.get("fds", 3))]
        fds_before = set(os.listdir("/proc/self/fd"))
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

        def send():
            try:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                        struct.pack(f"{len(send_fds)}i", *send_fds))] if send_fds else []
                a.sendmsg([frame[:1 << 16]], anc)
                if len(frame) > 1 << 16:
                    a.sendall(frame[1 << 16:])
            except OSError:
                pass
            finally:
                a.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got_fds = []
        try:
            try:
                data, got_fds = wire.recv_request(b, time.monotonic() + 5)
                msg = wire.parse_request(data)
            except wire.BadRequest:
                msg = None
        finally:
            b.close()  # first: a sender still writing a refused request gets EPIPE
            sender.join()
            a.close()
            for fd in got_fds:
                os.close(fd)
            for fd in send_fds:
                os.close(fd)
        leaked = set(os.listdir("/proc/self/fd")) - fds_before
        if leaked:
            raise WrongAnswer("fds", f"descriptors left open after a request: {sorted(leaked)}")
        if msg is None:
            return "rejected"
        ctx.phase("reference")
        if meta.get("fds", 3) != 3 or n != len(body):
            raise WrongAnswer("frame", f"accepted {meta} framing")
        want = json.loads(body.decode("utf-8"))
        ctx.phase("ltpa")
        if _json_depth_slow(want) > wire.MAX_JSON_DEPTH:
            raise WrongAnswer("depth", "accepted a request nested deeper than the bound")
        ok_env = {k: v for k, v in want["env"].items()
                  if k in wire.ENV_NAMES or k.startswith(wire.ENV_PREFIXES)}
        if msg != {"argv": want["argv"], "cwd": want["cwd"], "env": ok_env}:
            raise WrongAnswer("request", "the parsed request is not the JSON's (env filtered)")
        if not (isinstance(msg["cwd"], str) and msg["cwd"].startswith("/")
                and all(isinstance(x, str) for x in msg["argv"])):
            raise WrongAnswer("request", "accepted a request with wrong-typed fields")
        return "equal"

    def direct(self, path, meta):
        return None


# ----------------------------------------------------------------------------- input cache


class CacheFormat(_StudyJson):
    """The study's header cache (``<stem>.ltpa/cache/inputs.json``) mutated as JSON and text:
    ``load_study`` must give the same answer as with no cache (the demo study is valid), and
    leave a cache that holds what the files hold (malformed entries dropped, read again)."""

    name = "cache"
    HOT = ("version", "facts", "ok", "error", "kind", "dim", "voxel_size", "voxel_order",
           "vox_to_ras", "n_count", "shape", "affine")

    def setup(self, ctx):
        from ltpa.study.study import load_study

        self.study = make_study(ctx, n_scans=2)
        local_data = self.study / "local_data.json"
        self.cache = self.study / "local_data.ltpa" / "cache" / "inputs.json"
        load_study(local_data, {})
        self.raw = self.cache.read_bytes()
        self.seeds = [dict(name="inputs.json", raw=self.raw)]

    def write(self, ctx, payload: Payload) -> Path:
        self.cache.write_bytes(payload.data)
        return self.cache

    def run(self, ctx, path, meta):
        from ltpa.errors import LtpaError
        from ltpa.study.headers import _well_formed
        from ltpa.study.study import load_study

        try:
            load_study(self.study / "local_data.json", {})
            verdict = "equal"
        except LtpaError:  # a well-formed entry with other facts: the cache is trusted
            verdict = "noref"
        after = json.loads(self.cache.read_bytes())
        bad = [k for k, v in after.get("facts", {}).items() if not _well_formed(k, v)]
        if bad:
            raise WrongAnswer("cache", f"malformed entries kept in the cache: {bad[:2]}")
        return verdict

    def direct(self, path, meta):
        return None


FORMAT_CLASSES = {"trk": TrkFormat, "trk.gz": TrkGzFormat, "tck": TckFormat, "trx": TrxFormat,
                  "nifti": NiftiFormat, "graphml": GraphmlFormat, "labels": LabelsFormat,
                  "sidecar": SidecarFormat, "local_data": LocalDataFormat,
                  "request": RequestFormat, "cache": CacheFormat}


# --------------------------------------------------------------------------- the worker


def signature(exc: BaseException) -> str:
    if isinstance(exc, WrongAnswer):
        return f"WrongAnswer:{exc.stage}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}ltpa{os.sep}" in f.filename]
    f = ours[-1] if ours else (frames[-1] if frames else None)
    where = f"{Path(f.filename).name}:{f.lineno}" if f else "?"
    return f"{type(exc).__name__}@{where}"


def write_payload(folder: Path, payload: Payload) -> Path:
    path = folder / payload.name
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if isinstance(payload.data, dict):
        path.mkdir()
        for rel, data in payload.data.items():
            p = path / rel
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            except OSError:
                pass
    else:
        path.write_bytes(payload.data)
    return path


def payload_suffix(name: str) -> str:
    return name[len("input"):] if name.startswith("input") else Path(name).suffix


def save_crash(fmt_name, impl, payload: Payload, seed_name, how, text, sig, seed) -> str:
    folder = OUT / fmt_name
    folder.mkdir(parents=True, exist_ok=True)
    cid = payload.digest()
    dest = folder / f"{cid}{payload_suffix(payload.name)}"
    if isinstance(payload.data, dict):
        if dest.exists():
            shutil.rmtree(dest)
        write_payload(folder, Payload(dest.name, payload.data))
    else:
        data = impl.to_saved(payload.data) if hasattr(impl, "to_saved") else payload.data
        dest.write_bytes(data)
    meta = json.dumps(payload.meta)
    repro = (f"{sys.executable} {Path(__file__).resolve()} --format {fmt_name} --replay {dest}"
             + (f" --meta '{meta}'" if payload.meta else "") + f" --seed {seed}")
    direct = impl.direct(dest, payload.meta) if hasattr(impl, "direct") else None
    (folder / f"{cid}.txt").write_text(
        f"signature: {sig}\nformat: {fmt_name}\nseed file: {seed_name}\nmeta: {meta}\n"
        f"mutation: {how}\nreproduce: {repro}\n" + (f"direct: {direct}\n" if direct else "")
        + (f"(paths of the fuzzer's demo study are written as {STUDY_TOKEN} in the saved input)\n"
           if hasattr(impl, "to_saved") else "") + f"\n{text}")
    return str(dest)


def quiet():
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")


def set_limit(mem_gb):
    import resource

    if mem_gb:
        lim = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def worker(args) -> int:
    set_limit(args.mem_gb)
    quiet()
    work = Path(args.work)
    ctx = Ctx(work, args.seed)
    impl = FORMAT_CLASSES[args.format]()
    impl.setup(ctx)
    (work / "ready").write_text("")
    rng = np.random.default_rng([args.seed, args.run])
    stats = Counter({k: 0 for k in ("inputs", "equal", "noref", "rejected", "crash", "wrong")})
    crashes: dict = {}
    state = work / "state.json"
    current = work / "current.json"
    last = 0.0

    def dump():
        state.write_text(json.dumps({"stats": stats, "crashes": crashes, "extra": ctx.extra,
                                     "notes": ctx.notes}))

    while time.time() < args.deadline:
        seed = _pick(rng, impl.seeds)
        try:
            if rng.random() < 0.05:
                payload, how = impl.unmutated(seed, rng), "none"
            else:
                payload, how = impl.mutate(seed, rng)
        except Exception as exc:  # noqa: BLE001 - a mutation the fuzzer could not make: skip it
            ctx.note("fuzzer: mutation not made", f"{type(exc).__name__}: {exc}")
            continue
        name = impl.seed_name(seed)
        path = (impl.write(ctx, payload) if hasattr(impl, "write")
                else write_payload(ctx.inputs, payload))
        current.write_text(json.dumps({"seed": name, "mutation": how, "meta": payload.meta,
                                       "input": payload.name, "path": str(path)}))
        stats["inputs"] += 1
        ctx.phase("ltpa")
        try:
            stats[impl.run(ctx, path, payload.meta)] += 1
        except BaseException as exc:  # noqa: BLE001 - anything but LtpaError is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            if ctx.current_phase == "reference" and not isinstance(exc, WrongAnswer):
                # the reference (nibabel, networkx, trx-python, the slow loops) failed: no answer
                stats["noref"] += 1
                ctx.note(f"reference failed: {type(exc).__name__}",
                         "".join(traceback.format_exception(exc))[-1500:])
                continue
            stats["wrong" if isinstance(exc, WrongAnswer) else "crash"] += 1
            sig = signature(exc)
            if sig not in crashes:
                crashes[sig] = save_crash(args.format, impl, payload, name, how,
                                          "".join(traceback.format_exception(exc))[-6000:], sig,
                                          args.seed)
        now = time.time()
        if now - last > 1.0:
            last = now
            dump()
    dump()
    return 0


def replay(args) -> int:
    """Run one saved input through the same code as the fuzzer; print the outcome."""
    quiet()
    warnings.simplefilter("default")
    src = Path(args.replay)
    impl = FORMAT_CLASSES[args.format]()
    with tempfile.TemporaryDirectory(prefix="ltpa-fuzz-replay-") as tmp:
        ctx = Ctx(Path(tmp), args.seed)
        impl.setup(ctx)
        name = "input" + src.name[src.name.find("."):] if "." in src.name else "input"
        if src.is_dir():
            data = {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}
        else:
            data = src.read_bytes()
            if hasattr(impl, "from_saved"):
                data = impl.from_saved(data)
        payload = Payload(name, data, json.loads(args.meta) if args.meta else {})
        path = (impl.write(ctx, payload) if hasattr(impl, "write")
                else write_payload(ctx.inputs, payload))
        try:
            outcome = impl.run(ctx, path, payload.meta)
        except BaseException as exc:  # noqa: BLE001
            traceback.print_exception(exc)
            print(f"\n{signature(exc)}")
            return 1
        print(f"outcome: {outcome}")
        return 0


# --------------------------------------------------------------------------- the driver


def drive(fmt: str, seconds: float, seed: int, mem_gb: float) -> dict:
    """Run workers for ``fmt`` for ``seconds`` (one at a time; a new one after a death)."""
    total = Counter({k: 0 for k in ("inputs", "equal", "noref", "rejected", "crash", "wrong")})
    crashes: dict = {}
    extra: Counter = Counter()
    notes: dict = {}
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    t0 = time.time()
    deadline = t0 + seconds
    run = 0
    while deadline - time.time() > 1:
        with tempfile.TemporaryDirectory(prefix=f"ltpa-fuzz-{fmt}-", dir=base) as tmp:
            work = Path(tmp)
            (work / "tmp").mkdir()
            env = dict(os.environ, TMPDIR=str(work / "tmp"), PYTHONHASHSEED="0")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--format", fmt,
                   "--work", tmp, "--deadline", repr(deadline), "--seed", str(seed),
                   "--run", str(run), "--mem-gb", str(mem_gb)]
            with open(work / "stderr.txt", "wb") as err:
                started = time.time()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
                hung = False
                while proc.poll() is None:
                    time.sleep(0.2)
                    cur = work / "current.json"
                    try:
                        since, limit = cur.stat().st_mtime, INPUT_TIMEOUT
                    except OSError:
                        since, limit = started, STARTUP_TIMEOUT
                    if time.time() - since > limit:
                        proc.kill()
                        proc.wait()
                        hung = True
            try:
                state = json.loads((work / "state.json").read_text())
            except (OSError, ValueError):
                state = {"stats": {}, "crashes": {}, "extra": {}, "notes": {}}
            for k, v in state["stats"].items():
                total[k] += v
            for sig, path in state["crashes"].items():
                crashes.setdefault(sig, path)
            extra.update(state.get("extra", {}))
            for k, v in state.get("notes", {}).items():
                notes.setdefault(k, v)
            if not (work / "ready").exists() and not hung and proc.returncode != 0:
                stderr = (work / "stderr.txt").read_bytes()[-4000:].decode("utf-8", "replace")
                raise SystemExit(f"fuzz {fmt}: the worker failed while making its seeds "
                                 f"(a fuzzer problem, not a finding):\n{stderr}")
            if hung or proc.returncode != 0:
                cur = work / "current.json"
                how = json.loads(cur.read_text()) if cur.exists() else {}
                phase = (work / "phase").read_text() if (work / "phase").exists() else "ltpa"
                # the input that was running (counted in "inputs" only if a state was written
                # after it started): a crash of ltpa's, unless the reference was running
                total["inputs"] += 0 if state["stats"] else 1
                if phase == "reference":
                    total["noref"] += 1
                    extra["reference library died or hung (not counted as a crash)"] += 1
                else:
                    total["crash"] += 1
                folder = OUT / fmt
                folder.mkdir(parents=True, exist_ok=True)
                where = "_reference" if phase == "reference" else ""
                tag = f"{'hang' if hung else 'died'}{where}_{seed}_{run}"
                src = Path(how["path"]) if how.get("path") else None
                if src is not None and not src.exists():
                    src = None
                dest = None
                if src is not None:
                    dest = folder / f"{tag}{payload_suffix(how.get('input', src.name))}"
                    if src.is_dir():
                        shutil.copytree(src, dest, dirs_exist_ok=True)
                    else:
                        shutil.copy(src, dest)
                stderr = (work / "stderr.txt").read_bytes()[-4000:].decode("utf-8", "replace")
                what = (f"input took more than {INPUT_TIMEOUT:.0f} s (killed)" if hung
                        else f"worker exited with {proc.returncode}")
                (folder / f"{tag}.txt").write_text(
                    f"signature: {'hang' if hung else f'worker died ({proc.returncode})'}\n"
                    f"{what}\ninput: {json.dumps(how)}\n"
                    f"reproduce: {sys.executable} {Path(__file__).resolve()} --format {fmt} "
                    f"--replay {dest} --seed {seed}"
                    + (f" --meta '{json.dumps(how.get('meta'))}'" if how.get("meta") else "")
                    + f"\n\n{stderr}")
                sig = ("hang (> %.0f s)" % INPUT_TIMEOUT if hung
                       else f"worker died ({proc.returncode})")
                if phase == "reference":
                    notes.setdefault("reference library died or hung (not counted as a crash)",
                                     f"{sig}: {dest}")
                else:
                    crashes.setdefault(sig, str(dest or folder / f"{tag}.txt"))
        run += 1
    return {"format": fmt, "seconds": round(time.time() - t0, 1), **total,
            "distinct": crashes, "extra": dict(extra), "notes": notes}


def drive_pkl(seconds: float, seed: int, mem_gb: float) -> dict:
    """fuzz_pkl.py's inputs and worker, with crash inputs saved like the other formats."""
    import fuzz_pkl

    rng = np.random.default_rng(seed)
    counts = Counter({"accepted": 0, "rejected": 0, "crash": 0, "code ran": 0})
    crashes: dict = {}
    folder = OUT / "pkl"
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ltpa-fuzz-pkl-") as tmp:
        tmp = Path(tmp)
        marker = tmp / "PWNED"
        quiet()
        seeds = fuzz_pkl.real_seeds(tmp)
        inputs = (list(fuzz_pkl.handmade(str(marker)))
                  + [(f"seed {k}", d) for k, d in enumerate(seeds)])
        n_hand = len(inputs)
        done = 0
        while done < n_hand or time.time() - t0 < seconds:
            chunk = inputs[done:done + 200] if done < n_hand else [
                fuzz_pkl.mutate(seeds[int(rng.integers(0, len(seeds)))], seeds, rng)[::-1]
                for _ in range(200)]
            paths = []
            for k, (_, data) in enumerate(chunk):
                p = tmp / f"in{done + k}.pkl"
                p.write_bytes(data)
                paths.append(str(p))
            for (name, data), res in zip(chunk, fuzz_pkl.run_batch(paths, mem_gb)):
                counts[res["outcome"]] += 1
                if res["outcome"] in ("crash", "code ran"):
                    detail = res["detail"]
                    m = re.findall(r'File "[^"]*/ltpa/([^"]+)", line (\d+)', detail)
                    last = detail.strip().splitlines()[-1] if detail.strip() else "?"
                    etype = last.split(":")[0] if res["outcome"] == "crash" else "code ran"
                    sig = f"{etype}@{m[-1][0]}:{m[-1][1]}" if m else etype
                    if sig not in crashes:
                        folder.mkdir(parents=True, exist_ok=True)
                        cid = hashlib.sha1(data).hexdigest()[:12]
                        (folder / f"{cid}.pkl").write_bytes(data)
                        (folder / f"{cid}.txt").write_text(
                            f"signature: {sig}\ninput: {name}\noutcome: {res['outcome']}\n"
                            f"reproduce: {sys.executable} -c \"import ltpa; "
                            f"ltpa.load_track_dataset('{folder / f'{cid}.pkl'}').verify()\"\n\n"
                            f"{detail}")
                        crashes[sig] = str(folder / f"{cid}.pkl")
                os.unlink(res["path"])
            done += len(chunk)
        if marker.exists():
            counts["code ran"] += 1
            crashes.setdefault("code ran (marker file)", str(marker))
    n = sum(counts.values())
    return {"format": "pkl", "seconds": round(time.time() - t0, 1), "inputs": n, "equal": 0,
            "noref": counts["accepted"], "rejected": counts["rejected"],
            "crash": counts["crash"] + counts["code ran"], "wrong": 0, "distinct": crashes,
            "extra": {"hand-built payloads": n_hand, "code ran": counts["code ran"],
                      "accepted (verify()d)": counts["accepted"]}, "notes": {}}


def table(results) -> str:
    rows = ["| format | inputs | accepted = reference | accepted, no reference | "
            "rejected (LtpaError) | crashes | wrong answers |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        n_crash = sum(1 for s in r["distinct"] if not s.startswith("WrongAnswer"))
        n_wrong = sum(1 for s in r["distinct"] if s.startswith("WrongAnswer"))
        rows.append(f"| {r['format']} | {r['inputs']:,} | {r['equal']:,} | {r['noref']:,} | "
                    f"{r['rejected']:,} | {r['crash']:,}"
                    + (f" ({n_crash} distinct)" if r["crash"] else "")
                    + f" | {r['wrong']:,}" + (f" ({n_wrong} distinct)" if r["wrong"] else "")
                    + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--format", default="all", choices=("all",) + FORMATS)
    ap.add_argument("--seconds", type=float, default=60, help="per format")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-gb", type=float, default=4.0,
                    help="address-space limit of the worker (0: none)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--replay",
                    help="run one saved input (a file under benchmarks/out/fuzz_crashes)")
    ap.add_argument("--meta", help="with --replay: the input's meta (JSON, from its .txt)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.replay:
        if args.format in ("all", "pkl"):
            ap.error("--replay needs one --format other than pkl (a pkl: load_track_dataset)")
        return replay(args)

    formats = FORMATS if args.format == "all" else (args.format,)
    # warm up the compiled kernels' cache outside the clock
    subprocess.run([sys.executable, "-c", "import ltpa.kernels"], check=False)
    results = []
    for fmt in formats:
        t = time.time()
        res = drive_pkl(args.seconds, args.seed, args.mem_gb) if fmt == "pkl" else \
            drive(fmt, args.seconds, args.seed, args.mem_gb)
        results.append(res)
        print(f"fuzz {fmt}: {res['inputs']:,} inputs in {time.time() - t:.0f} s, "
              f"{res['equal']:,} = reference, {res['noref']:,} no reference, "
              f"{res['rejected']:,} rejected, {res['crash']:,} crashes, {res['wrong']:,} wrong",
              file=sys.stderr, flush=True)
    bad = any(r["crash"] or r["wrong"] for r in results)
    if args.json:
        print(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]),
                          "results": results}, indent=2, default=str))
        return 1 if bad else 0
    print(table(results))
    for r in results:
        for sig, path in sorted(r["distinct"].items()):
            path = Path(path)
            txt = path.parent / (path.name.split(".")[0] + ".txt")
            print(f"  {r['format']}: {sig}: {path} (details in {txt})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
