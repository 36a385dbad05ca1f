#!/usr/bin/env python3
"""Seeded synthetic tractography + atlas in DSI Studio's QSDR 2 mm grid.

Writes (default directory benchmarks/data/):
  synth_{n}.trk      TrackVis v2, dim (79,95,69), voxel 2 mm, 'LPS', vox_to_ras = QSDR
                     affine, points in TrackVis voxmm (0..dim*2 mm), float32, no
                     scalars/properties.  Written directly in binary, in vectorised chunks.
  synth_{n}.tck      the same streamlines in RAS mm (MRtrix format), unless --no-tck.
  atlas83.nii.gz     int16 labels 1..83 (Voronoi parcels of a brain-like ellipsoid with
                     a small unlabeled "ventricle" core), 0 elsewhere, affine = QSDR.
  atlas83.graphml    networkx graph with nodes "1".."83".

Streamlines: start/end points uniformly inside an ellipsoid, joined by a straight chord
plus a sinusoidal bend perpendicular to it; ~1 mm steps (npts = ceil(chord)+1, so about
61 points on average); lengths vary ~5..150 mm.

Usage:  python benchmarks/make_data.py --n 100000 [--seed 0] [--out DIR] [--no-tck]
        [--verify/--no-verify]   (verification defaults to on for n <= 100000)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

DIM = np.array([79, 95, 69])
VOX = np.array([2.0, 2.0, 2.0])
QSDR_AFFINE = np.array(
    [[-2.0, 0, 0, 78], [0, -2.0, 0, 76], [0, 0, 2.0, -50], [0, 0, 0, 1]]
)
EXTENT = DIM * VOX  # voxmm extent (158, 190, 138)
CENTER = EXTENT / 2.0
# ellipsoid (voxmm) where streamline end points live; the atlas ellipsoid is a bit larger
SL_SEMI = np.array([58.0, 70.0, 48.0])
ATLAS_SEMI = np.array([64.0, 77.0, 54.0])
VENTRICLE_SEMI = np.array([10.0, 18.0, 9.0])
N_REGIONS = 83


# --------------------------------------------------------------------------- affines
def trackvis_to_rasmm() -> np.ndarray:
    """voxmm -> RAS mm, exactly as nibabel computes it (verified at import time).

    nibabel: ras = vox_to_ras @ [orientation fix] @ (p / voxel_size - 0.5).  For this
    header voxel_order 'LPS' matches aff2axcodes(vox_to_ras) so the orientation fix is
    the identity.
    """
    scale = np.diag(list(1.0 / VOX) + [1.0])
    offset = np.eye(4)
    offset[:3, 3] = -0.5
    return QSDR_AFFINE @ offset @ scale


def _check_affine_against_nibabel(hdr_rec) -> np.ndarray:
    from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

    hdr = dict(zip(hdr_rec.dtype.names, hdr_rec[0]))
    nib_aff = get_affine_trackvis_to_rasmm(hdr).astype(np.float64)
    ours = trackvis_to_rasmm()
    if not np.allclose(nib_aff, ours, atol=1e-6):
        raise SystemExit(f"affine mismatch:\nnibabel={nib_aff}\nours={ours}")
    return nib_aff


# --------------------------------------------------------------------------- headers
def trk_header(n: int) -> np.ndarray:
    from nibabel.streamlines.trk import header_2_dtype

    h = np.zeros(1, dtype=header_2_dtype)
    h["magic_number"] = b"TRACK"
    h["dimensions"] = DIM
    h["voxel_sizes"] = VOX
    h["origin"] = 0
    h["nb_scalars_per_point"] = 0
    h["nb_properties_per_streamline"] = 0
    h["voxel_to_rasmm"] = QSDR_AFFINE
    h["voxel_order"] = b"LPS"
    h["image_orientation_patient"] = [1, 0, 0, 0, 1, 0]
    h["nb_streamlines"] = n
    h["version"] = 2
    h["hdr_size"] = 1000
    assert h.itemsize == 1000
    return h


def tck_header(n: int) -> bytes:
    def text(off):
        return (
            "mrtrix tracks\n"
            "datatype: Float32LE\n"
            f"count: {n:010d}\n"
            f"total_count: {n:010d}\n"
            f"file: . {off}\n"
            "END\n"
        )

    off = len(text(0)) + 8
    s = text(off)
    s = s + "\0" * (off - len(s))  # pad so the data starts exactly at `off`
    assert len(s) == off
    return s.encode("latin1")


# --------------------------------------------------------------------------- generation
def _in_ellipsoid(rng, m, semi):
    """m points uniformly inside an axis-aligned ellipsoid centred in the grid."""
    v = rng.normal(size=(m, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = rng.random(m) ** (1.0 / 3.0)
    return CENTER + v * r[:, None] * semi


def gen_chunk(rng, m):
    """Return (npts int32 (m,), points float32 (P,3)) in voxmm."""
    a = _in_ellipsoid(rng, m, SL_SEMI)
    b = _in_ellipsoid(rng, m, SL_SEMI)
    chord = b - a
    clen = np.linalg.norm(chord, axis=1)
    npts = (np.ceil(clen).astype(np.int64) + 1).clip(2, None)
    # perpendicular unit vector for the bend
    r = rng.normal(size=(m, 3))
    u = chord / np.maximum(clen, 1e-9)[:, None]
    perp = r - (r * u).sum(1, keepdims=True) * u
    perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), 1e-9)
    amp = rng.uniform(-0.15, 0.15, size=m) * clen
    nper = rng.integers(1, 3, size=m)  # half- or full-period bend

    P = int(npts.sum())
    sid = np.repeat(np.arange(m), npts)
    starts = np.cumsum(npts) - npts
    idx = np.arange(P) - np.repeat(starts, npts)
    t = idx / (npts[sid] - 1)
    bend = (amp[sid] * np.sin(np.pi * nper[sid] * t))[:, None]
    pts = a[sid] + t[:, None] * chord[sid] + bend * perp[sid]
    np.clip(pts, 1e-3, EXTENT - 1e-3, out=pts)
    return npts.astype(np.int32), pts.astype(np.float32)


def trk_body(npts, pts) -> bytes:
    """int32 n followed by n*3 float32, for each streamline, vectorised."""
    m = len(npts)
    words = np.empty(m + 3 * len(pts), dtype=np.float32)
    hdr_pos = np.cumsum(3 * npts.astype(np.int64) + 1) - (3 * npts + 1)
    mask = np.ones(len(words), dtype=bool)
    mask[hdr_pos] = False
    words.view(np.int32)[hdr_pos] = npts
    words[mask] = pts.ravel()
    return words.tobytes()


def tck_body(npts, pts_ras) -> bytes:
    """float32 triplets per point, each streamline terminated by (NaN,NaN,NaN)."""
    m = len(npts)
    rows = np.empty((m + len(pts_ras), 3), dtype=np.float32)
    sep = np.cumsum(npts.astype(np.int64) + 1) - 1
    mask = np.ones(len(rows), dtype=bool)
    mask[sep] = False
    rows[sep] = np.nan
    rows[mask] = pts_ras
    return rows.tobytes()


def write_streamlines(n, seed, out_dir, tck=True, chunk=50_000):
    rng = np.random.default_rng(seed)
    trk_path = os.path.join(out_dir, f"synth_{n}.trk")
    tck_path = os.path.join(out_dir, f"synth_{n}.tck")
    hdr = trk_header(n)
    aff = _check_affine_against_nibabel(hdr)
    first = None
    total_pts = 0
    ftrk = open(trk_path + ".part", "wb")
    ftck = open(tck_path + ".part", "wb") if tck else None
    try:
        ftrk.write(hdr.tobytes())
        if ftck:
            ftck.write(tck_header(n))
        done = 0
        while done < n:
            m = min(chunk, n - done)
            npts, pts = gen_chunk(rng, m)
            if first is None:
                first = (npts[:5].copy(), pts[: int(npts[:5].sum())].copy())
            total_pts += len(pts)
            ftrk.write(trk_body(npts, pts))
            if ftck:
                ras = (pts.astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]).astype(np.float32)
                ftck.write(tck_body(npts, ras))
            done += m
        if ftck:
            ftck.write(np.full(3, np.inf, dtype=np.float32).tobytes())
    finally:
        ftrk.close()
        if ftck:
            ftck.close()
    os.replace(trk_path + ".part", trk_path)
    if tck:
        os.replace(tck_path + ".part", tck_path)
    return trk_path, (tck_path if tck else None), first, total_pts


# --------------------------------------------------------------------------- atlas
def write_atlas(seed, out_dir):
    import networkx as nx
    import nibabel as nib

    rng = np.random.default_rng(seed + 12345)
    nii = os.path.join(out_dir, "atlas83.nii.gz")
    gml = os.path.join(out_dir, "atlas83.graphml")
    ii, jj, kk = np.meshgrid(*[np.arange(d) for d in DIM], indexing="ij")
    centers = np.stack([ii, jj, kk], -1).reshape(-1, 3) * VOX + VOX / 2  # voxmm
    inside = (((centers - CENTER) / ATLAS_SEMI) ** 2).sum(1) <= 1.0
    core = (((centers - CENTER) / VENTRICLE_SEMI) ** 2).sum(1) <= 1.0
    seeds = _in_ellipsoid(rng, N_REGIONS, ATLAS_SEMI * 0.9)
    lab = np.zeros(len(centers), dtype=np.int16)
    pts = centers[inside]
    d2 = ((pts[:, None, :] - seeds[None, :, :]) ** 2).sum(-1)
    lab[inside] = d2.argmin(1) + 1
    lab[core] = 0
    vol = lab.reshape(tuple(DIM))
    present = np.unique(vol[vol > 0])
    if len(present) != N_REGIONS:
        raise SystemExit(f"atlas has only {len(present)} regions; change seed")
    img = nib.Nifti1Image(vol, QSDR_AFFINE)
    img.set_qform(QSDR_AFFINE, code=4)
    img.set_sform(QSDR_AFFINE, code=4)
    nib.save(img, nii)
    g = nx.Graph()
    for r in range(1, N_REGIONS + 1):
        g.add_node(str(r), dn_name=f"region{r:02d}", dn_fsname=f"region{r:02d}")
    nx.write_graphml(g, gml)
    return nii, gml, float((vol > 0).mean())


# --------------------------------------------------------------------------- verify
def verify(trk_path, tck_path, n, first, total_pts, full):
    import nibabel as nib

    aff = trackvis_to_rasmm()
    if full:
        t = nib.streamlines.load(trk_path)
        assert len(t.streamlines) == n, (len(t.streamlines), n)
        assert len(t.streamlines._data) == total_pts
        assert tuple(t.header["dimensions"]) == tuple(DIM)
        assert t.header["voxel_order"] in (b"LPS", "LPS")
        assert np.allclose(t.affine, QSDR_AFFINE)
        npts, pts = first
        off = 0
        for i, k in enumerate(npts):
            exp = pts[off : off + k].astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
            got = t.streamlines[i]
            assert got.shape == (k, 3)
            assert np.allclose(got, exp, atol=1e-4), i
            off += k
        if tck_path:
            c = nib.streamlines.load(tck_path)
            assert len(c.streamlines) == n
            assert len(c.streamlines._data) == total_pts
            assert np.allclose(c.streamlines._data, t.streamlines._data, atol=1e-4)
        print(f"  verify: nibabel loads {n} streamlines / {total_pts} points; "
              f"first 5 match; tck == trk in RAS: OK")
    else:
        t = nib.streamlines.load(trk_path, lazy_load=True)
        assert t.header["nb_streamlines"] == n
        size = os.path.getsize(trk_path)
        assert size == 1000 + 4 * n + 12 * total_pts, size
        if tck_path:
            c = nib.streamlines.load(tck_path, lazy_load=True)
            assert int(c.header["count"]) == n
            s = next(iter(c.streamlines))
            assert s.ndim == 2 and s.shape[1] == 3
        print(f"  verify (header/size only): n={n}, points={total_pts}: OK")


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True, help="number of streamlines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(here, "data"))
    ap.add_argument("--no-tck", action="store_true", help="do not write the .tck copy")
    ap.add_argument("--force", action="store_true", help="regenerate even if files exist")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--verify", dest="verify", action="store_true", default=None,
                   help="full nibabel verification (default for n <= 100000)")
    g.add_argument("--no-verify", dest="verify", action="store_false")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    full = a.verify if a.verify is not None else a.n <= 100_000

    t0 = time.perf_counter()
    nii = os.path.join(a.out, "atlas83.nii.gz")
    gml = os.path.join(a.out, "atlas83.graphml")
    if a.force or not (os.path.exists(nii) and os.path.exists(gml)):
        nii, gml, frac = write_atlas(a.seed, a.out)
        print(f"atlas: {nii} ({frac:.1%} of grid labeled), {gml}")
    trk = os.path.join(a.out, f"synth_{a.n}.trk")
    tck = os.path.join(a.out, f"synth_{a.n}.tck")
    if not a.force and os.path.exists(trk) and (a.no_tck or os.path.exists(tck)):
        print(f"exists, skipping (use --force): {trk}")
        return 0
    trk, tck, first, total = write_streamlines(a.n, a.seed, a.out, tck=not a.no_tck)
    t1 = time.perf_counter()
    print(f"wrote {trk} ({os.path.getsize(trk)/1e6:.0f} MB, {total} points, "
          f"{total/a.n:.1f} pts/streamline) {'and ' + tck if tck else ''} in {t1-t0:.1f}s")
    if a.verify is not False:
        verify(trk, tck, a.n, first, total, full)
        print(f"  verified in {time.perf_counter()-t1:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
