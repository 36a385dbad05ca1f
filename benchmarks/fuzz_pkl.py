"""Bounded-time fuzz of ``ltpa.load_track_dataset`` (the pkl loader) for code execution and crashes.

    python benchmarks/fuzz_pkl.py [--seconds 60] [--seed 0] [--mem-gb 4] [--json]

Inputs, in two families:

- *hand-built payloads*, one or more per opcode family, written with a small pickle
  assembler: GLOBAL and STACK_GLOBAL with dotted names that walk from an allowed object to
  ``__globals__``/``__builtins__`` (the exploit of issue #10: ``numpy.dtypes`` +
  ``__builtins__.get`` -> ``eval``), names of modules that run commands (os, posix,
  subprocess, builtins); REDUCE on each callable the loader knows with hostile arguments
  (an ndarray claiming 2^40 elements, negative and huge shapes, object dtypes, a dtype
  string of 10^6 characters); NEWOBJ of other classes; BUILD with wrong-typed state
  (a list for a dtype, a string for a dataset, a dataset state with each field replaced
  by a wrong type); opcodes the loader does not know (INST, OBJ, PERSID, EXT, buffers);
  and memory bombs (length fields of 2^60, deep nesting, millions of objects);
- *mutated real pkls* (format 1 from ``save_track_dataset``, with big aligned arrays, and
  the committed first-release file ``tests/data/track_dataset_v0.pkl``): bit flips,
  random bytes, truncation, length fields set to edge values, names swapped for
  dangerous ones, splices.

Each input is loaded in a worker process with an address-space limit and a
``sys.addaudithook`` that records any event by which code could run (``exec``,
``compile``, ``os.system``, ``subprocess.Popen``, ``os.exec*``, ``os.posix_spawn``,
``ctypes``, imports of new modules, ``open`` of any file but the input). Outcomes:
*accepted* (a TrackDataset, then ``verify()``; an LtpaError from verify counts as
rejected), *rejected* (``LtpaError``), *crash* (any other exception or the worker
dying) and *code ran* (an audit event). The goal is 0 crashes and 0 code runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
V0_FIXTURE = REPO / "tests" / "data" / "track_dataset_v0.pkl"

# --------------------------------------------------------------------------- a tiny assembler


def s(text: str) -> bytes:
    b = text.encode()
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def glob(module, name, stack=True) -> bytes:
    if stack:
        return s(module) + s(name) + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def by(data: bytes) -> bytes:
    if len(data) < 256:
        return b"C" + bytes([len(data)]) + data
    return b"B" + struct.pack("<I", len(data)) + data


def i(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


P = b"\x80\x05"
STOP = b"."
NP_DTYPE = glob("numpy", "dtype")
FROMBUF = glob("numpy._core.numeric", "_frombuffer")
RECON = glob("numpy._core.multiarray", "_reconstruct")
SCALAR = glob("numpy._core.multiarray", "scalar")
RESTORE = glob("ltpa.dataset", "_restore")


def dtype(code: str) -> bytes:
    """numpy's own pickling of np.dtype(code): REDUCE then BUILD with its state."""
    return NP_DTYPE + tup(s(code), b"\x89", b"\x88") + b"R" + tup(i(3), s("<"), b"N", b"N", b"N",
                                                                   i(-1), i(-1), i(0)) + b"b"


def dtype_bomb(levels: int) -> bytes:
    """A dtype whose BUILD state is a tuple tree of 2^levels leaves in ~2.5*levels bytes: each
    level is DUP + TUPLE2 of the level below, so every node is shared."""
    return (P + glob("numpy", "dtype") + s("f8") + b"\x89\x88\x87R" + b"N"
            + b"2\x86" * levels + b"b" + STOP)


def handmade(marker: str) -> list[tuple[str, bytes]]:
    """(name, pickle bytes) for each opcode family; a payload that got to run would touch
    ``marker``."""
    cmd = f"touch {marker}"
    code = f"__import__('os').system({cmd!r})"
    out = []
    # GLOBAL / STACK_GLOBAL: dotted names from allowed objects, wildcard modules, plain evil
    for module, name in [
        ("numpy.dtypes", "__builtins__.get"), ("numpy", "dtypes.__builtins__.get"),
        ("numpy", "Float64DType"), ("numpy.dtypes", "Float64DType"),
        ("numpy", "_core.multiarray.__builtins__.get"),
        ("ltpa.dataset", "_restore.__globals__.get"),
        ("ltpa.dataset", "TrackDataset.__init__.__globals__.get"), ("numpy", "dtype.__init__"),
        ("ltpa.dataset", "os.system"), ("ltpa.dataset", "pickle.loads"), ("numpy", "load"),
        ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
        ("subprocess", "Popen"), ("builtins", "getattr"), ("nt", "system"),
        ("numpy.core.multiarray", "_reconstruct.__globals__"), ("__main__", "x"),
    ]:
        for stack in (True, False):
            if not stack and "\n" in module + name:
                continue
            out.append((f"global {module}:{name} {'stack' if stack else 'text'}",
                        P + glob(module, name, stack) + s("eval") + b"\x85R" + s(code) + b"\x85R"
                        + STOP))
    # REDUCE on each allowed callable with hostile arguments
    i8 = dtype("i8")
    huge = [(2**40,), (-1,), (2**63,), (2**62, 2**62), tuple([2] * 40), (1.5,), ("3",)]
    def value(v):  # a shape entry as the pickle holds it: int, float (BINFLOAT) or string
        if isinstance(v, int):
            return i(v)
        return b"G" + struct.pack(">d", v) if isinstance(v, float) else s(v)

    for shape in huge:
        out.append((f"_frombuffer shape {str(shape)[:30]}",
                    P + FROMBUF + tup(by(b"\0" * 8), i8, tup(*[value(v) for v in shape]),
                                      s("C")) + b"R" + STOP))
        ints = tup(*[i(v) for v in shape if isinstance(v, int)])
        out.append((f"_reconstruct shape {str(shape)[:30]}",
                    P + RECON + tup(glob("numpy", "ndarray"), ints, by(b"b"))
                    + b"R" + tup(i(1), tup(i(0)), i8, b"\x89", by(b"")) + b"b" + STOP))
    out.append(("_reconstruct then BUILD claiming 2^40 elements",
                P + RECON + tup(glob("numpy", "ndarray"), tup(i(0)), by(b"b")) + b"R"
                + tup(i(1), tup(i(2**40)), i8, b"\x89", by(b"\0" * 16)) + b"b" + STOP))
    for code_ in ("O", "V8", "U10", "M8", "c16", "S" + "9" * 30, "x" * 100, "i8" * 10000):
        out.append((f"dtype {code_[:20]}",
                    P + NP_DTYPE + tup(s(code_), b"\x89", b"\x88") + b"R" + STOP))
    out.append(("dtype with evil args", P + NP_DTYPE + tup(glob("os", "system")) + b"R" + STOP))
    out.append(("scalar of object dtype",
                P + SCALAR + tup(dtype("i8"), by(b"\0" * 3)) + b"R" + STOP))
    out.append(("scalar with a list", P + SCALAR + tup(dtype("i8"), b"]") + b"R" + STOP))
    out.append(("restore with no args", P + RESTORE + b")R" + STOP))
    out.append(("restore with a list", P + RESTORE + tup(b"]") + b"R" + STOP))
    out.append(("restore with code string", P + RESTORE + tup(s(code)) + b"R" + STOP))
    # NEWOBJ of classes the loader does not build, and of ours with args
    out.append(("newobj os.system", P + glob("os", "system") + b")\x81" + STOP))
    out.append(("newobj TrackDataset with args",
                P + glob("ltpa.dataset", "TrackDataset") + tup(s(cmd)) + b"\x81" + STOP))
    out.append(("newobj ndarray", P + glob("numpy", "ndarray") + b")\x81" + STOP))
    # BUILD with wrong-typed state
    for name, state in [("list", b"]"), ("string", s(cmd)), ("int", i(7)), ("None", b"N"),
                        ("dict with code", b"}" + s("__reduce__") + s(code) + b"s")]:
        out.append((f"build dtype with {name}",
                    P + NP_DTYPE + tup(s("i8"), b"\x89", b"\x88") + b"R" + state + b"b" + STOP))
        out.append((f"build TrackDataset with {name}",
                    P + glob("ltpa.dataset", "TrackDataset") + b")\x81" + state + b"b" + STOP))
        out.append((f"build VoxelIndex with {name}",
                    P + glob("ltpa.dataset", "VoxelIndex") + b")\x81" + state + b"b" + STOP))
        out.append((f"build on a dict with {name}", P + b"}" + state + b"b" + STOP))
    # opcodes outside the loader's set
    for name, op in [("INST", b"ios\nsystem\n(S'" + cmd.encode() + b"'\ntR."),
                     ("OBJ", b"(cos\nsystem\nS'" + cmd.encode() + b"'\no."),
                     ("NEWOBJ_EX", P + glob("os", "system") + b")}\x92" + STOP),
                     ("PERSID", b"P" + cmd.encode() + b"\n."),
                     ("BINPERSID", P + s(cmd) + b"Q" + STOP),
                     ("EXT1", P + b"\x82\x01" + STOP), ("NEXT_BUFFER", P + b"\x97" + STOP),
                     ("READONLY_BUFFER", P + by(b"x") + b"\x98" + STOP),
                     ("STRING", b"S'x'\n."),
                     ("protocol 0 REDUCE", b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.")]:
        out.append((f"opcode {name}", op))
    # memory and structure bombs
    out.append(("BINUNICODE8 2^60", P + b"\x8d" + struct.pack("<Q", 2**60) + b"x" + STOP))
    out.append(("BINBYTES8 2^60", P + b"\x8e" + struct.pack("<Q", 2**60) + b"x" + STOP))
    out.append(("BYTEARRAY8 2^63", P + b"\x96" + struct.pack("<Q", 2**63) + STOP))
    out.append(("LONG4 2^31", P + b"\x8b" + struct.pack("<i", 2**31 - 1) + STOP))
    out.append(("FRAME 2^63", P + b"\x95" + struct.pack("<Q", 2**63) + STOP))
    out.append(("deep lists", P + b"]" * 200_000 + b"a" * 199_999 + STOP))
    out.append(("deep marks", P + b"(" * 200_000 + STOP))
    out.append(("many objects", P + b"]" + b"(" + b"N" * 3_000_000 + b"e" + STOP))
    out.append(("marks of a 30 MB file", P + b"(" * (30 << 20) + STOP))
    out.append(("memo entries of one object", P + b"N" + b"\x94" * 3_000_000 + STOP))
    out.append(("PUTs of one object", P + b"N" + b"q\x07" * 1_500_000 + STOP))
    out.append(("DUP-shared dtype state", dtype_bomb(60)))
    out.append(("memo miss", P + b"h\x05" + STOP))
    out.append(("self-referencing list", P + b"]\x94h\x00a" + STOP))
    out.append(("empty", b""))
    out.append(("just STOP", b"."))
    out.append(("protocol 9", b"\x80\x09N."))
    return out


# ------------------------------------------------------------------- real seeds and mutations


def real_seeds(folder: Path) -> list[bytes]:
    """Format-1 pkls (small, and one with big aligned arrays) and the committed format-0 file."""
    from ltpa.demo.small import make_streamlines
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
    from ltpa.formats.trkwrite import write_trk
    from ltpa.jobs.pipeline import index_scan

    seeds = []
    for n, m in ((3, 1), (400, 50)):
        rng = np.random.default_rng(n)
        sls, _ = make_streamlines(rng, n, m)
        trk = folder / f"seed{n}.trk"
        write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
        pkl = folder / f"seed{n}.pkl"
        index_scan(trk, pkl, scan_id=f"seed{n}", sidecar=False,
                   properties={"scan_group": "g",
                               "attributes": {"age": n, "tags": ["a", None, 1.5]}})
        seeds.append(pkl.read_bytes())
    if V0_FIXTURE.exists():
        seeds.append(V0_FIXTURE.read_bytes())
    return seeds


DANGEROUS = [b"os", b"system", b"posix", b"eval", b"exec", b"builtins", b"__builtins__.get",
             b"subprocess", b"Popen", b"numpy.dtypes", b"_restore.__globals__"]


def mutate(data: bytes, seeds: list[bytes], rng) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = int(rng.integers(0, 8))
    if kind == 0:  # bit flips
        for _ in range(int(rng.integers(1, 8))):
            p = int(rng.integers(0, len(b)))
            b[p] ^= 1 << int(rng.integers(0, 8))
        return bytes(b), "bit flips"
    if kind == 1:  # random bytes
        for _ in range(int(rng.integers(1, 16))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        return bytes(b), "random bytes"
    if kind == 2:  # truncation
        return bytes(b[:int(rng.integers(0, len(b)))]), "truncated"
    if kind == 3:  # a length field set to an edge value (after a length-carrying opcode)
        p = int(rng.integers(0, max(1, len(b) - 9)))
        edge = int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1, len(b), len(b) + 1]))
        width = int(rng.choice([1, 4, 8]))
        b[p + 1:p + 1 + width] = (edge % (1 << (8 * width))).to_bytes(width, "little")
        return bytes(b), f"length {edge} at {p}"
    if kind == 4:  # a short string swapped for a dangerous name (same length, padded)
        starts = [k for k in range(len(b) - 2) if b[k] == 0x8C and b[k + 1] < 40]
        if starts:
            k = starts[int(rng.integers(0, len(starts)))]
            n = b[k + 1]
            name = DANGEROUS[int(rng.integers(0, len(DANGEROUS)))]
            b[k + 1:k + 2 + n] = bytes([len(name)]) + name
            return bytes(b), f"name -> {name.decode()}"
        return bytes(b), "no names"
    if kind == 5:  # splice with another seed
        other = seeds[int(rng.integers(0, len(seeds)))]
        p = int(rng.integers(0, len(b)))
        q = int(rng.integers(0, len(other)))
        return bytes(b[:p]) + other[q:q + int(rng.integers(1, 4096))] + bytes(b[p:]), "splice"
    if kind == 6:  # a chunk duplicated or deleted
        p = int(rng.integers(0, len(b)))
        q = min(len(b), p + int(rng.integers(1, 64)))
        if rng.random() < 0.5:
            return bytes(b[:q]) + bytes(b[p:]), "duplicated chunk"
        return bytes(b[:p]) + bytes(b[q:]), "deleted chunk"
    # an opcode inserted
    p = int(rng.integers(0, len(b)))
    op = bytes([int(rng.choice([0x52, 0x62, 0x81, 0x93, 0x28, 0x74, 0x30, 0x31, 0x32, 0x61,
                                0x65, 0x73, 0x75, 0x68, 0x71, 0x94, 0x92, 0x69, 0x6F, 0x97]))])
    return bytes(b[:p]) + op + bytes(b[p:]), f"opcode {op!r} inserted"


# --------------------------------------------------------------------------- the worker

DANGER_EVENTS = ("exec", "compile", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
                 "os.spawn", "os.fork", "ctypes", "os.startfile", "import", "builtins.input",
                 "os.remove", "os.rename", "shutil", "socket", "urllib")


def worker(paths: list[str], mem_gb: float) -> list[dict]:
    limit = int(mem_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import ltpa
    from ltpa.errors import LtpaError

    # warm every lazy import of the loader with a valid file, so any later import is the file's
    warm = ltpa.load_track_dataset(V0_FIXTURE)
    warm.verify()
    _ = warm.tracks[0], warm.tracks[len(warm) - 1]
    warm.get_tracks_by_ijks(list(warm.tracks_at_ijk)[:5])
    try:
        raise LtpaError("warm")
    except LtpaError:
        traceback.format_exc()
    import warnings

    warnings.simplefilter("error")  # a numpy warning (overflow, ...) is a finding, not noise
    state = {"events": [], "armed": False, "input": None}

    def hook(event, args):
        if not state["armed"]:
            return
        if event == "open" and args and str(args[0]) == state["input"]:
            return
        if event == "open" or event.startswith(DANGER_EVENTS):
            state["events"].append(f"{event} {str(args)[:120]}")

    sys.addaudithook(hook)
    results = []
    for path in paths:
        state["events"] = []
        state["input"] = path
        state["armed"] = True
        outcome, detail = "crash", ""
        try:
            ds = ltpa.load_track_dataset(path)
            try:
                ds.verify()
                if ds.get_ntracks():
                    ds.tracks[0]
                    ds.tracks[ds.get_ntracks() - 1]
                ds.get_tracks_by_ijks(list(ds.tracks_at_ijk)[:5])
                outcome = "accepted"
            except LtpaError as exc:
                outcome, detail = "rejected", str(exc)[:200]
        except LtpaError as exc:
            outcome, detail = "rejected", str(exc)[:200]
        except BaseException as exc:  # noqa: BLE001 - a crash is any other exception
            state["armed"] = False  # formatting the traceback reads source files
            outcome, detail = "crash", "".join(traceback.format_exception(exc))[-1500:]
        state["armed"] = False
        if state["events"]:
            outcome, detail = "code ran", "; ".join(state["events"][:5])
        results.append({"path": path, "outcome": outcome, "detail": detail})
    return results


def run_batch(paths, mem_gb, timeout=600) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, "--worker", "--mem-gb", str(mem_gb), *paths],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-1500:]
        if len(paths) == 1:
            return [{"path": paths[0], "outcome": "crash",
                     "detail": f"worker died ({proc.returncode}): {tail}"}]
        half = len(paths) // 2  # find the input that kills the worker
        return run_batch(paths[:half], mem_gb, timeout) + run_batch(paths[half:], mem_gb, timeout)
    return json.loads(proc.stdout)


def fuzz(seconds: float, seed: int = 0, mem_gb: float = 4.0, batch: int = 200) -> dict:
    rng = np.random.default_rng(seed)
    counts = {"accepted": 0, "rejected": 0, "crash": 0, "code ran": 0}
    problems = []
    with tempfile.TemporaryDirectory(prefix="ltpa-fuzz-pkl-") as tmp:
        tmp = Path(tmp)
        marker = tmp / "PWNED"
        seeds = real_seeds(tmp)
        inputs = [(name, data) for name, data in handmade(str(marker))]
        inputs += [(f"seed {k}", data) for k, data in enumerate(seeds)]
        t0 = time.monotonic()
        n_hand = len(inputs)
        done = 0
        while True:
            if done >= n_hand and time.monotonic() - t0 > seconds:
                break
            chunk = inputs[done:done + batch] if done < n_hand else [
                mutate(seeds[int(rng.integers(0, len(seeds)))], seeds, rng)[::-1]
                for _ in range(batch)]
            paths = []
            for k, (name, data) in enumerate(chunk):
                p = tmp / f"in{done + k}.pkl"
                p.write_bytes(data)
                paths.append(str(p))
            for (name, _), res in zip(chunk, run_batch(paths, mem_gb)):
                counts[res["outcome"]] += 1
                if res["outcome"] in ("crash", "code ran"):
                    problems.append({"input": name, **res})
                os.unlink(res["path"])
            done += len(chunk)
        if marker.exists():
            counts["code ran"] += 1
            problems.append({"input": "marker file", "outcome": "code ran", "detail": str(marker)})
        return {"inputs": sum(counts.values()), "handmade": n_hand,
                "seconds": round(time.monotonic() - t0, 1), **counts, "problems": problems[:20]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-gb", type=float, default=4.0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.paths, args.mem_gb)))
        return 0
    res = fuzz(args.seconds, args.seed, args.mem_gb)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['inputs']} inputs ({res['handmade']} hand-built) in {res['seconds']} s: "
              f"{res['accepted']} accepted, {res['rejected']} rejected with LtpaError, "
              f"{res['crash']} crashes, {res['code ran']} code runs")
        for p in res["problems"]:
            print(f"  {p['outcome']}: {p['input']}: {p['detail'][:300]}")
    return 1 if res["crash"] or res["code ran"] else 0


if __name__ == "__main__":
    sys.exit(main())
