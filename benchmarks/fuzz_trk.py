"""Bounded-time fuzz of the .trk reader and the kernels behind `ltpa index` / `ltpa label`.

    python benchmarks/fuzz_trk.py [--seconds 60] [--seed 0] [--mem-gb 4]

Starts from small real .trk files (written with ``ltpa.formats.trkwrite.write_trk``; with
and without per-point scalars and per-streamline properties; little- and
big-endian; QSDR and small native grids; zero- and one-point streamlines) and
mutates their bytes: bit flips, random bytes, truncation, appended garbage, a
streamline's count word set to huge / negative / zero, header fields (n_count,
dim, voxel size, hdr_size, scalar/property counts, voxel order, magic) set to
edge values, NaN/inf injected into coordinates, splices between seeds. Every
input goes through ``ltpa.jobs.pipeline.index_scan`` (TrkFile + build_index + pickle
write) and ``ltpa.jobs.pipeline.label_scan`` (an atlas on the trk's grid: its shape and the
affine nibabel derives from the header) into a temp
folder; the pkl is read back with ``ltpa.load_track_dataset``. An accepted input
is also checked against the slow references (dict-of-sets hashing and dsi2's
labeling loop over a struct-by-struct read of the file): a wrong answer counts as
a crash too.

A *crash* is any exception that is not ``ltpa.errors.LtpaError``, a wrong answer,
or the worker process dying (segfault, killed). Each distinct crash (by exception
type and the innermost ltpa frame) is saved under ``benchmarks/out/fuzz_crashes/``
(``<id>.trk`` plus ``<id>.txt`` with the mutation, the traceback and a one-line
reproducer) and the script exits 1. The inputs run in a worker process with an
address-space limit (``--mem-gb``), so a file that makes the code allocate
without bound shows up as a MemoryError crash instead of taking the machine down.

Not part of the test suite (``make test``); run it by hand or in a nightly job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "fuzz_crashes"

# header field offsets (nibabel's header_2_dtype)
OFF_DIM, OFF_VS, OFF_NSCAL, OFF_NPROP = 6, 12, 36, 238
OFF_ORDER, OFF_NCOUNT, OFF_VERSION, OFF_HDRSIZE = 948, 988, 992, 996


# --------------------------------------------------------------------------- seeds

def _streamlines(rng, n, dim, vs, max_len=12, spread=0.15):
    out = []
    for i in range(n):
        k = 0 if i == 1 else 1 if i == 2 else int(rng.integers(2, max_len))
        pts = rng.uniform(-spread, 1 + spread, (k, 3)) * np.asarray(dim) * np.asarray(vs)
        on = rng.random((k, 3)) < 0.3  # points exactly on voxel faces
        pts[on] = (np.round(pts / np.asarray(vs)) * np.asarray(vs))[on]
        out.append(pts.astype(np.float32))
    return out


def _with_scalars(path, sls, dim, vs, order, affine, n_scalars, n_props, rng, big_endian=False):
    """A .trk with per-point scalars and per-streamline properties, byte by byte."""
    from nibabel.streamlines.trk import header_2_dtype

    from ltpa.formats.trkwrite import make_header

    hdr = make_header(dim, vs, order, affine, len(sls))
    hdr["nb_scalars_per_point"] = n_scalars
    hdr["nb_properties_per_streamline"] = n_props
    e = ">" if big_endian else "<"
    body = bytearray()
    for sl in sls:
        body += struct.pack(e + "i", len(sl))
        for p in sl:
            body += struct.pack(f"{e}{3 + n_scalars}f", *p, *rng.uniform(0, 1, n_scalars))
        body += struct.pack(f"{e}{n_props}f", *rng.uniform(0, 1, n_props))
    raw = hdr.astype(header_2_dtype.newbyteorder(e)).tobytes()
    Path(path).write_bytes(raw + bytes(body))


def make_seeds(folder: Path, rng) -> list[dict]:
    """Small valid inputs: (path, space, byte order, stride, n_props)."""
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
    from ltpa.formats.trkwrite import write_trk

    seeds = []
    dim, vs = (10, 12, 8), (2.0, 2.0, 2.0)
    p = folder / "native_le.trk"
    write_trk(p, _streamlines(rng, 20, dim, vs), dim, vs, "LAS", np.diag([*vs, 1.0]))
    seeds.append(dict(path=p, space="native"))
    dim2, vs2 = (7, 9, 5), (1.25, 0.7, 3.0)
    p = folder / "native_aniso.trk"
    write_trk(p, _streamlines(rng, 15, dim2, vs2), dim2, vs2, "LPS", np.diag([*vs2, 1.0]))
    seeds.append(dict(path=p, space="native"))
    p = folder / "native_scalars.trk"
    _with_scalars(p, _streamlines(rng, 12, dim, vs), dim, vs, "LAS", np.diag([*vs, 1.0]), 2, 1, rng)
    seeds.append(dict(path=p, space="native"))
    p = folder / "native_be.trk"
    _with_scalars(p, _streamlines(rng, 12, dim, vs), dim, vs, "LAS", np.diag([*vs, 1.0]), 0, 0, rng,
                  big_endian=True)
    seeds.append(dict(path=p, space="native"))
    p = folder / "native_be_scalars.trk"
    _with_scalars(p, _streamlines(rng, 10, dim, vs), dim, vs, "LAS", np.diag([*vs, 1.0]), 1, 2, rng,
                  big_endian=True)
    seeds.append(dict(path=p, space="native"))
    p = folder / "qsdr.trk"
    write_trk(p, _streamlines(rng, 10, QSDR_DIM, (2, 2, 2), spread=0.05), QSDR_DIM, (2, 2, 2),
              "LPS", QSDR_AFFINE)
    seeds.append(dict(path=p, space="qsdr"))
    p = folder / "empty.trk"
    write_trk(p, [], dim, vs, "LAS", np.diag([*vs, 1.0]))
    seeds.append(dict(path=p, space="native"))
    for s in seeds:
        s["data"] = s["path"].read_bytes()
        big = s["data"][OFF_HDRSIZE:OFF_HDRSIZE + 4] == struct.pack(">i", 1000)
        s["order"] = ">" if big else "<"
    return seeds


# --------------------------------------------------------------------------- mutations

EDGE_INTS = [0, 1, -1, 2, 3, 7, 1000, 32767, -32768, 65535, 2**31 - 1, -2**31, 2**30, 10**6]
EDGE_FLOATS = [0.0, -0.0, -1.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf"),
               1e-45, 2.0, 0.5]


def _count_offsets(seed):
    """Byte offsets of the count words of a seed (its layout is known)."""
    data, e = seed["data"], seed["order"]
    n_s = struct.unpack_from(e + "h", data, OFF_NSCAL)[0]
    n_p = struct.unpack_from(e + "h", data, OFF_NPROP)[0]
    pos, out = 1000, []
    while pos + 4 <= len(data):
        out.append(pos)
        (n,) = struct.unpack_from(e + "i", data, pos)
        pos += 4 + 4 * (n * (3 + n_s) + n_p)
    return out


def mutate(seed, seeds, rng) -> tuple[bytes, list[str]]:
    data = bytearray(seed["data"])
    e = seed["order"]
    done = []
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(["flip", "byte", "truncate", "append", "count", "ncount", "dim", "vs",
                           "hdrsize", "nscal", "order", "magic", "nan", "splice", "flip", "count",
                           "ncount", "nan"])
        n = len(data)
        if kind == "flip" and n:
            body_bias = rng.random() < 0.7 and n > 1000
            pos = int(rng.integers(1000 if body_bias else 0, n))
            bit = int(rng.integers(0, 8))
            data[pos] ^= 1 << bit
            done.append(f"flip byte {pos} bit {bit}")
        elif kind == "byte" and n:
            pos = int(rng.integers(0, n))
            data[pos] = int(rng.integers(0, 256))
            done.append(f"set byte {pos}={data[pos]}")
        elif kind == "truncate" and n:
            cut = int(rng.integers(0, n))
            del data[cut:]
            done.append(f"truncate to {cut}")
        elif kind == "append":
            k = int(rng.integers(1, 64))
            data += rng.integers(0, 256, k, dtype=np.uint8).tobytes()
            done.append(f"append {k} random bytes")
        elif kind == "count":
            offs = [o for o in _count_offsets(seed) if o + 4 <= len(data)]
            if offs:
                o = int(rng.choice(offs))
                v = int(rng.choice(EDGE_INTS + [int(rng.integers(-2**31, 2**31))]))
                struct.pack_into(e + "i", data, o, v)
                done.append(f"count word at {o} = {v}")
        elif kind in ("ncount", "hdrsize") and n >= 1000:
            o = OFF_NCOUNT if kind == "ncount" else OFF_HDRSIZE
            v = int(rng.choice(EDGE_INTS + [int(rng.integers(-50, 50))]))
            struct.pack_into(e + "i", data, o, v)
            done.append(f"{kind} = {v}")
        elif kind == "dim" and n >= 1000:
            ax = int(rng.integers(0, 3))
            v = int(rng.choice([0, 1, 2, -1, -32768, 32767, 300, 2000, int(rng.integers(1, 40))]))
            struct.pack_into(e + "h", data, OFF_DIM + 2 * ax, v)
            done.append(f"dim[{ax}] = {v}")
        elif kind == "vs" and n >= 1000:
            ax = int(rng.integers(0, 3))
            v = float(rng.choice(EDGE_FLOATS))
            struct.pack_into(e + "f", data, OFF_VS + 4 * ax, v)
            done.append(f"voxel_size[{ax}] = {v}")
        elif kind == "nscal" and n >= 1000:
            o = OFF_NSCAL if rng.random() < 0.5 else OFF_NPROP
            v = int(rng.choice([0, 1, 2, 3, -1, 10, 32767, -32768]))
            struct.pack_into(e + "h", data, o, v)
            done.append(f"{'n_scalars' if o == OFF_NSCAL else 'n_properties'} = {v}")
        elif kind == "order" and n >= 1000:
            v = bytes(rng.choice([b"LAS\0", b"RPI\0", b"XYZ\0", b"\0\0\0\0", b"LLL\0",
                                  rng.integers(0, 256, 4, dtype=np.uint8).tobytes()]))
            data[OFF_ORDER:OFF_ORDER + 4] = v
            done.append(f"voxel_order = {v!r}")
        elif kind == "magic" and n >= 6:
            data[int(rng.integers(0, 6))] = int(rng.integers(0, 256))
            done.append("magic byte changed")
        elif kind == "nan" and n > 1004:
            pos = 1000 + 4 * int(rng.integers(0, (n - 1000) // 4))
            v = float(rng.choice([float("nan"), float("inf"), float("-inf"), -1e30, 1e30, -0.0]))
            struct.pack_into(e + "f", data, pos, v)
            done.append(f"float at {pos} = {v}")
        elif kind == "splice":
            other = seeds[int(rng.integers(0, len(seeds)))]["data"]
            if len(other) > 1000 and n > 1000:
                a = int(rng.integers(1000, len(other)))
                b = int(rng.integers(a, len(other) + 1))
                at = int(rng.integers(1000, n + 1))
                data[at:at] = other[a:b]
                done.append(f"splice {b - a} bytes at {at}")
    return bytes(data), done


# --------------------------------------------------------------------------- references

def read_slow(data: bytes):
    """Streamlines of a .trk read record by record with struct, either byte order."""
    e = ">" if data[OFF_HDRSIZE:OFF_HDRSIZE + 4] == struct.pack(">i", 1000) else "<"
    n_s = struct.unpack_from(e + "h", data, OFF_NSCAL)[0]
    n_p = struct.unpack_from(e + "h", data, OFF_NPROP)[0]
    pos, out = 1000, []
    while pos < len(data):
        (n,) = struct.unpack_from(e + "i", data, pos)
        pos += 4
        rows = [struct.unpack_from(f"{e}{3 + n_s}f", data, pos + 4 * (3 + n_s) * i)[:3]
                for i in range(n)]
        pos += 4 * ((3 + n_s) * n + n_p)
        out.append(np.array(rows, dtype=np.float32).reshape(-1, 3))
    return out


def atlas_affine(header) -> np.ndarray:
    """voxel (centre) -> RAS of a .trk's own voxel grid, by nibabel's voxmm -> RAS rule in
    float64: the voxels of ``voxel_order`` flipped/permuted to the orientation of
    ``vox_to_ras`` (a diagonal grid when vox_to_ras is unusable). An atlas written with this
    affine is on the trk's grid, which ``label_scan`` checks."""
    import warnings

    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    vs = np.asarray(header["voxel_sizes"], dtype=np.float64)
    try:
        v2r = np.asarray(header["voxel_to_rasmm"], dtype=np.float64)
        if v2r[3, 3] == 0:
            v2r = np.eye(4)
        order = bytes(header["voxel_order"]).strip(b"\0 ").decode("latin-1").upper() or "LPS"
        if np.all(np.isfinite(v2r)) and abs(np.linalg.det(v2r[:3, :3])) > 1e-12:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                ornt = ornt_transform(axcodes2ornt(tuple(order)), io_orientation(v2r))
                aff = v2r @ inv_ornt_aff(ornt, tuple(int(d) for d in header["dimensions"]))
            if np.all(np.isfinite(aff)):
                return aff
    except Exception:  # noqa: BLE001 - a damaged header: a plain diagonal grid
        pass
    if np.all(np.isfinite(vs)) and np.all(vs > 0):
        return np.diag([*vs, 1.0])
    return np.eye(4)


def check_against_reference(data, trk_path, space, ds, ids, atlas):
    sys.path.insert(0, str(HERE.parent / "tests"))
    from ltpa.formats.grids import key_map_for
    from ltpa.formats.trk import TrkFile
    from reference import hash_slow, label_slow

    with TrkFile(trk_path) as trk:
        km = key_map_for(space, trk.dim, trk.voxel_size, trk.voxel_order)
    sign = np.asarray(km.sign, dtype=np.int64)
    shift = np.asarray(km.shift, dtype=np.int64)
    sls = read_slow(data)
    ref = hash_slow(sls, trk.voxel_size,
                    lambda v: tuple(int(v[a]) * int(sign[a]) + int(shift[a]) for a in range(3)),
                    tuple(km.grid.dim))
    got = {tuple(int(x) for x in k): ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk.keys()}
    if got != ref:
        raise AssertionError(f"index differs from the dict-of-sets reference "
                             f"({len(got)} vs {len(ref)} voxels)")
    if ids is not None:
        regions = sorted(set(np.unique(atlas).tolist()) - {0})
        exp = label_slow(sls, atlas, trk.voxel_size, regions)
        if not np.array_equal(ids, exp):
            bad = int(np.flatnonzero(ids != exp)[0])
            raise AssertionError(f"connection id of streamline {bad} is {ids[bad]}, "
                                 f"reference {exp[bad]}")


# --------------------------------------------------------------------------- worker

def run_one(data: bytes, seed, work: Path, atlas_cache: dict, rng) -> str:
    """'accepted' or 'rejected'; raises on a crash."""
    import nibabel as nib

    from ltpa import load_track_dataset
    from ltpa.errors import LtpaError
    from ltpa.formats.trk import TrkFile
    from ltpa.jobs.pipeline import index_scan, label_scan

    trk_path = work / "input.trk"
    trk_path.write_bytes(data)
    space = seed["space"]
    try:
        index_scan(trk_path, work / "out.pkl", space=space, scan_id="fuzz", sidecar=False)
        ds = load_track_dataset(work / "out.pkl")
        with TrkFile(trk_path) as trk:
            dim = trk.dim
            affine = atlas_affine(trk.header)
    except LtpaError:
        return "rejected"
    ids = atlas = None
    if int(np.prod(dim, dtype=np.int64)) <= 2_000_000:
        # the atlas is on the trk's grid (label_scan checks the affine); its labels depend on dim
        key = (dim, np.round(affine, 6).tobytes())
        if key not in atlas_cache:
            if len(atlas_cache) > 64:
                atlas_cache.clear()
            atlas = rng.integers(0, 6, dim).astype(np.int16)
            atlas[rng.random(dim) < 0.4] = 0
            apath = work / f"atlas_{len(atlas_cache)}.nii.gz"
            nib.Nifti1Image(atlas, affine).to_filename(str(apath))
            atlas_cache[key] = (apath, atlas)
        apath, atlas = atlas_cache[key]
        try:
            label_scan(trk_path, apath, work / "out.npy", space=space, scan_id="fuzz",
                       sidecar=False)
        except LtpaError:
            return "rejected"
        ids = np.load(work / "out.npy")
    if len(data) < 200_000:
        check_against_reference(data, trk_path, space, ds, ids, atlas)
    return "accepted"


def signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "ltpa" in f.filename] or frames
    f = ours[-1] if ours else None
    where = f"{Path(f.filename).name}:{f.lineno}" if f else "?"
    return f"{type(exc).__name__}@{where}"


def worker(args) -> int:
    import logging
    import resource

    if args.mem_gb:
        lim = int(args.mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    logging.getLogger().setLevel(logging.CRITICAL)
    logging.getLogger("ltpa").setLevel(logging.CRITICAL)
    work = Path(args.work)
    rng = np.random.default_rng(args.seed)
    seeds = make_seeds(work, rng)
    atlas_cache: dict = {}
    stats = {"tried": 0, "accepted": 0, "rejected": 0, "crashes": 0}
    crashes = {}
    deadline = time.monotonic() + args.seconds
    state = work / "state.json"
    last_write = 0.0
    while time.monotonic() < deadline:
        seed = seeds[int(rng.integers(0, len(seeds)))]
        data, how = mutate(seed, seeds, rng) if rng.random() < 0.95 else (seed["data"], ["none"])
        (work / "current.json").write_text(json.dumps({"seed": seed["path"].name,
                                                       "space": seed["space"], "mutation": how}))
        stats["tried"] += 1
        try:
            stats[run_one(data, seed, work, atlas_cache, rng)] += 1
        except Exception as exc:  # noqa: BLE001 - anything but LtpaError is a finding
            stats["crashes"] += 1
            sig = signature(exc)
            if sig not in crashes:
                crashes[sig] = save_crash(data, seed, how, "".join(traceback.format_exception(exc)),
                                          sig)
        now = time.monotonic()
        if now - last_write > 1.0:
            last_write = now
            state.write_text(json.dumps({"stats": stats, "crashes": crashes}))
    state.write_text(json.dumps({"stats": stats, "crashes": crashes}))
    return 0


def save_crash(data: bytes, seed, how, text: str, sig: str) -> str:
    OUT.mkdir(parents=True, exist_ok=True)
    import hashlib

    cid = hashlib.sha1(data).hexdigest()[:12]
    trk = OUT / f"{cid}.trk"
    trk.write_bytes(data)
    repro = (f"{sys.executable} -c \"from ltpa.jobs.pipeline import index_scan, label_scan; "
             f"index_scan('{trk}', '/tmp/fuzz_repro.pkl', space='{seed['space']}')\"")
    (OUT / f"{cid}.txt").write_text(
        f"signature: {sig}\nseed: {seed['path'].name} (space {seed['space']})\n"
        f"mutation: {'; '.join(how)}\nreproduce: {repro}\n\n{text}")
    return str(trk)


# --------------------------------------------------------------------------- driver

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-gb", type=float, default=4.0,
                    help="address-space limit of the worker (0: none)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    t0 = time.monotonic()
    total = {"tried": 0, "accepted": 0, "rejected": 0, "crashes": 0}
    crashes: dict = {}
    fatal = []
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    run = 0
    # warm up the compiled kernels' cache outside the clock
    subprocess.run([sys.executable, "-c", "import ltpa.kernels"], check=False)
    t0 = time.monotonic()
    while (left := args.seconds - (time.monotonic() - t0)) > 1:
        with tempfile.TemporaryDirectory(prefix="ltpa-fuzz-", dir=base) as tmp:
            work = Path(tmp)
            cmd = [sys.executable, __file__, "--worker", "--work", str(work), "--seconds",
                   str(left), "--seed", str(args.seed * 1000 + run), "--mem-gb", str(args.mem_gb)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            state = (json.loads((work / "state.json").read_text())
                     if (work / "state.json").exists() else {"stats": {}, "crashes": {}})
            for k in total:
                total[k] += state["stats"].get(k, 0)
            for sig, path in state["crashes"].items():
                crashes.setdefault(sig, path)
            if proc.returncode != 0:
                # the worker died on an input: that input is the current one
                total["tried"] += 1
                total["crashes"] += 1
                OUT.mkdir(parents=True, exist_ok=True)
                cur = work / "current.json"
                how = json.loads(cur.read_text()) if cur.exists() else {}
                src = work / "input.trk"
                name = f"fatal_{args.seed}_{run}"
                if src.exists():
                    shutil.copy(src, OUT / f"{name}.trk")
                (OUT / f"{name}.txt").write_text(
                    f"worker exited with {proc.returncode}\ninput: {json.dumps(how)}\n\n"
                    f"{proc.stderr[-4000:]}")
                fatal.append(str(OUT / f"{name}.trk"))
                crashes.setdefault(f"worker died ({proc.returncode})", str(OUT / f"{name}.trk"))
        run += 1
    took = time.monotonic() - t0
    print(f"fuzz_trk: {total['tried']} inputs in {took:.0f} s ({total['tried'] / took:.0f}/s), "
          f"{total['accepted']} accepted (and equal to the slow references), "
          f"{total['rejected']} rejected with LtpaError, {total['crashes']} crashes "
          f"({len(crashes)} distinct)")
    for sig, path in sorted(crashes.items()):
        print(f"  CRASH {sig}: {path} (traceback in {Path(path).with_suffix('.txt')})")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
