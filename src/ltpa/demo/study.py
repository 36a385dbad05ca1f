"""The demo study in DSI Studio's QSDR grid (the tests' small fixture is ``ltpa.demo.small``).

``make_study_demo`` (``ltpa demo``, ``make demo``) writes a study that looks like one: a
brain-shaped mask, two Lausanne-like parcellations, 20 scans in two groups with ~2x10^4
streamlines each, one scan with b0-space atlases and a .fib.gz, one .tck, and a planted
group effect that the workflow's outputs must give back (see the section below and the
TRUTH.md it writes).

``make_demo`` (``ltpa demo --small``, and the fixture of many tests) is the tiny one, in
``ltpa.demo.small``; the files are written by ``ltpa.demo.files``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..formats.grids import QSDR_AFFINE, QSDR_DIM
from .files import (
    nifti_gz_bytes,
    write_bytes,
    write_study_graphml,
    write_study_lut,
    write_tck_flat,
    write_trk_flat,
)
from .small import expected_id

# The demo study (``ltpa demo``): a small, plausible study with a known effect.
#
# A brain-shaped mask in the QSDR grid (an ellipsoid with a midline fissure and a brain
# stem), two nested parcellations with the Lausanne 2008 region names and numbering
# (scale33: 83 regions, scale60: 129), 20 scans in two groups with smooth streamlines
# drawn between parcels from one fixed "connectome", and a planted effect: patients have
# 30% fewer streamlines between lh.superiorfrontal and lh.precuneus. Everything comes
# from numpy and the seed (no download); the geometry does not depend on the seed.
# =====================================================================================

# Lausanne 2008 scale33 cortical parcels, in the order of their ids (rh 1-34, lh 42-75)
CORTEX = (
    "lateralorbitofrontal", "parsorbitalis", "frontalpole", "medialorbitofrontal",
    "parstriangularis", "parsopercularis", "rostralmiddlefrontal", "superiorfrontal",
    "caudalmiddlefrontal", "precentral", "paracentral", "rostralanteriorcingulate",
    "caudalanteriorcingulate", "posteriorcingulate", "isthmuscingulate", "postcentral",
    "supramarginal", "superiorparietal", "inferiorparietal", "precuneus", "cuneus",
    "pericalcarine", "lateraloccipital", "lingual", "fusiform", "parahippocampal",
    "entorhinal", "temporalpole", "inferiortemporal", "middletemporal", "bankssts",
    "superiortemporal", "transversetemporal", "insula",
)
# scale60 (Lausanne "resolution150"): sub-parcels per scale33 parcel, (rh, lh)
SPLITS = {
    "lateralorbitofrontal": (2, 2), "medialorbitofrontal": (2, 1),
    "rostralmiddlefrontal": (2, 3), "superiorfrontal": (4, 4), "precentral": (3, 4),
    "postcentral": (2, 3), "supramarginal": (2, 2), "superiorparietal": (3, 3),
    "inferiorparietal": (3, 2), "precuneus": (2, 2), "lateraloccipital": (3, 2),
    "lingual": (2, 2), "fusiform": (2, 2), "inferiortemporal": (2, 2),
    "middletemporal": (2, 2), "superiortemporal": (2, 2), "insula": (2, 2),
}
# subcortical parcels (FreeSurfer names, aseg values left/right), in Lausanne's order;
# shapes: centre (left hemisphere, MNI mm) and semi-axes (mm)
SUBCORTICAL = (
    ("Thalamus-Proper", (10, 49), (-11, -18, 7), (7, 10, 7)),
    ("Caudate", (11, 50), (-14, 12, 12), (4, 8, 6)),
    ("Putamen", (12, 51), (-25, 2, 1), (5, 12, 7)),
    ("Pallidum", (13, 52), (-19, -4, -1), (3.5, 6, 4)),
    ("Accumbens-area", (26, 58), (-10, 11, -8), (4, 4, 4)),
    ("Hippocampus", (17, 53), (-27, -22, -14), (5, 14, 5)),
    ("Amygdala", (18, 54), (-23, -4, -21), (5, 5, 5)),
)
BRAIN_STEM_ASEG = 16
# where each cortical parcel sits (left hemisphere, MNI mm), and whether on the medial wall
CORTEX_SEEDS = {
    "lateralorbitofrontal": (-26, 30, -16, 0), "parsorbitalis": (-44, 38, -10, 0),
    "frontalpole": (-8, 66, -8, 0), "medialorbitofrontal": (-4, 40, -18, 1),
    "parstriangularis": (-48, 28, 6, 0), "parsopercularis": (-50, 12, 14, 0),
    "rostralmiddlefrontal": (-36, 46, 18, 0), "superiorfrontal": (-14, 26, 56, 0),
    "caudalmiddlefrontal": (-38, 10, 50, 0), "precentral": (-40, -12, 52, 0),
    "paracentral": (-4, -28, 64, 1), "rostralanteriorcingulate": (-4, 36, 6, 1),
    "caudalanteriorcingulate": (-4, 18, 30, 1), "posteriorcingulate": (-4, -14, 38, 1),
    "isthmuscingulate": (-4, -44, 20, 1), "postcentral": (-44, -26, 50, 0),
    "supramarginal": (-54, -40, 32, 0), "superiorparietal": (-24, -62, 58, 0),
    "inferiorparietal": (-44, -68, 34, 0), "precuneus": (-4, -60, 40, 1),
    "cuneus": (-4, -82, 22, 1), "pericalcarine": (-4, -86, 6, 1),
    "lateraloccipital": (-30, -90, 0, 0), "lingual": (-4, -72, -4, 1),
    "fusiform": (-36, -50, -20, 0), "parahippocampal": (-24, -34, -18, 0),
    "entorhinal": (-24, -10, -34, 0), "temporalpole": (-34, 14, -34, 0),
    "inferiortemporal": (-52, -38, -22, 0), "middletemporal": (-60, -30, -8, 0),
    "bankssts": (-54, -46, 10, 0), "superiortemporal": (-56, -14, 2, 0),
    "transversetemporal": (-46, -24, 12, 0), "insula": (-40, 2, 4, 0),
}
BRAIN_CENTRE = np.array([0.0, -18.0, 14.0])  # MNI mm
BRAIN_AXES = np.array([68.0, 88.0, 60.0])  # semi-axes of the ellipsoid, mm
RIBBON = 0.92  # cortex: the outer shell (normalised radius >= this) and the medial wall
BRAIN_STEM = ((0.0, -28.0), 9.0, (-50.0, -8.0))  # axis (x, y), radius, z range (mm)

# the planted effect (scale33 names): patients have EFFECT times the controls' rate
PLANTED = ("lh.superiorfrontal", "lh.precuneus")
EFFECT = 0.7
PLANTED_SHARE = 0.015  # the pair's share of a control scan's streamlines
# with repeat scans: the log-sd of each subject's own factor per region pair
SUBJECT_SD = 0.5
STUDY_SCALES = {"scale33": 83, "scale60": 129}


def _ras_to_voxmm(ras):
    """MNI/RAS mm -> TrackVis voxmm of the QSDR grid (LPS): voxel i covers [2i, 2i + 2)."""
    ras = np.asarray(ras, dtype=np.float64)
    return np.stack([79.0 - ras[..., 0], 77.0 - ras[..., 1], ras[..., 2] + 51.0], axis=-1)


def _voxmm_to_ras(voxmm):
    voxmm = np.asarray(voxmm, dtype=np.float64)
    return np.stack([79.0 - voxmm[..., 0], 77.0 - voxmm[..., 1], voxmm[..., 2] - 51.0], axis=-1)


def study_regions() -> dict:
    """Region tables of both scales: {scale: [dict(id, name, fsname, hemisphere, region,
    aseg, parent)]} in id order (Lausanne 2008 numbering: rh cortex, rh subcortical, lh
    cortex, lh subcortical, brain stem).

    Returns
    -------
    dict
        "scale33" (83 rows) and "scale60" (129 rows) -> list of dict, one per region: "id"
        (1-based, int), "name" (e.g. "lh.superiorfrontal", "Left-Thalamus-Proper"),
        "fsname", "hemisphere" ("right" or "left"; the brain stem "left"), "region"
        ("cortical" or "subcortical"), "aseg" (FreeSurfer aseg value of a subcortical
        region, None for cortex) and "parent" (the scale33 name it belongs to). A new
        dict each call.
    """
    out = {"scale33": [], "scale60": []}
    for scale in out:
        rows = out[scale]
        for hemi, side, h in (("right", "rh", 0), ("left", "lh", 1)):
            for name in CORTEX:
                parts = SPLITS.get(name, (1, 1))[h] if scale == "scale60" else 1
                for p in range(parts):
                    fs = f"{name}_{p + 1}" if scale == "scale60" else name
                    rows.append(dict(id=len(rows) + 1, name=f"{side}.{fs}", fsname=fs,
                                     hemisphere=hemi, region="cortical", aseg=None,
                                     parent=f"{side}.{name}"))
            for name, aseg, _, _ in SUBCORTICAL:
                full = f"{'Right' if h == 0 else 'Left'}-{name}"
                rows.append(dict(id=len(rows) + 1, name=full, fsname=full, hemisphere=hemi,
                                 region="subcortical", aseg=aseg[1 - h], parent=full))
        rows.append(dict(id=len(rows) + 1, name="Brain-Stem", fsname="Brain-Stem",
                         hemisphere="left", region="subcortical", aseg=BRAIN_STEM_ASEG,
                         parent="Brain-Stem"))
        assert len(rows) == STUDY_SCALES[scale], (scale, len(rows))
    return out


_STUDY_ATLAS = {}


def _affine(matrix, points) -> np.ndarray:
    """``matrix`` (3x3, or 4x4 with its translation) applied to (N, 3) points, column by
    column (elementwise: a BLAS product of a tall (N, 3) array is slower here)."""
    m = np.asarray(matrix, dtype=np.float64)
    t = m[:3, 3] if m.shape == (4, 4) else np.zeros(3)
    p = [np.asarray(points[:, c], dtype=np.float64) for c in range(3)]
    return np.stack([m[r, 0] * p[0] + m[r, 1] * p[1] + m[r, 2] * p[2] + t[r]
                     for r in range(3)], axis=1)


def _qsdr_centres() -> np.ndarray:
    """MNI mm of every QSDR voxel centre, (N, 3) in C order."""
    return _affine(QSDR_AFFINE, np.indices(QSDR_DIM).reshape(3, -1).T)


def study_atlas() -> dict:
    """The study's brain in the QSDR grid: ``mask`` (bool) and the ``scale33`` and
    ``scale60`` label volumes (int16), and ``regions`` (``study_regions()``). Cached.

    Returns
    -------
    dict
        "mask": bool array of shape ``QSDR_DIM`` (the brain); "scale33" and "scale60":
        int16 label arrays of shape ``QSDR_DIM`` (0: white matter or outside the brain);
        "regions": ``study_regions()``. The same dict (and arrays) each call: callers must
        not modify them.
    """
    if _STUDY_ATLAS:
        return _STUDY_ATLAS
    regions = study_regions()
    ids33 = {r["name"]: r["id"] for r in regions["scale33"]}
    ras = _qsdr_centres()
    r = np.sqrt((((ras - BRAIN_CENTRE) / BRAIN_AXES) ** 2).sum(axis=1))
    (sx, sy), s_rad, (sz0, sz1) = BRAIN_STEM
    stem = (((ras[:, 0] - sx) ** 2 + (ras[:, 1] - sy) ** 2 <= s_rad ** 2)
            & (ras[:, 2] >= sz0) & (ras[:, 2] <= sz1))
    mask = (r <= 1.0) | stem
    lab33 = np.zeros(ras.shape[0], dtype=np.int16)
    lab33[stem] = ids33["Brain-Stem"]
    for name, _, centre, axes in SUBCORTICAL:
        for side, sign in (("Left", 1.0), ("Right", -1.0)):
            c = np.array(centre, dtype=np.float64) * (sign, 1, 1)
            inside = (((ras - c) / np.asarray(axes, dtype=np.float64)) ** 2).sum(axis=1) <= 1.0
            lab33[inside & (lab33 == 0) & mask] = ids33[f"{side}-{name}"]
    x = ras[:, 0]
    ribbon = mask & (lab33 == 0) & (x != 0) & ((r >= RIBBON) | ((np.abs(x) <= 6) & (r >= 0.45)))
    for side, sign in (("lh", 1.0), ("rh", -1.0)):
        seeds = []
        for name in CORTEX:
            sxx, syy, szz, medial = CORTEX_SEEDS[name]
            p = np.array([sxx * sign, syy, szz], dtype=np.float64)
            if not medial:  # onto the outer shell, along the ray from the centre
                rp = np.sqrt((((p - BRAIN_CENTRE) / BRAIN_AXES) ** 2).sum())
                p = BRAIN_CENTRE + (p - BRAIN_CENTRE) * (0.96 / rp)
            seeds.append(p)
        seeds = np.array(seeds)
        mine = np.flatnonzero(ribbon & ((x < 0) if side == "lh" else (x > 0)))
        d2 = ((ras[mine, None, :] - seeds[None, :, :]) ** 2).sum(axis=2)
        nearest = np.argmin(d2, axis=1)
        lab33[mine] = np.array([ids33[f"{side}.{n}"] for n in CORTEX], np.int16)[nearest]
    # scale60: each scale33 parcel cut into slabs of equal size along its longest axis
    lab60 = np.zeros_like(lab33)
    by_parent = {}
    for row in regions["scale60"]:
        by_parent.setdefault(row["parent"], []).append(row["id"])
    order = np.argsort(lab33, kind="stable")
    bounds = np.searchsorted(lab33[order], np.arange(1, 85))
    for row in regions["scale33"]:
        vox = order[bounds[row["id"] - 1]:bounds[row["id"]]]
        kids = by_parent[row["name"]]
        if len(kids) == 1:
            lab60[vox] = kids[0]
            continue
        pts = ras[vox] - ras[vox].mean(axis=0)
        axis = np.linalg.svd(pts, full_matrices=False)[2][0]
        proj = pts @ axis
        if axis[np.argmax(np.abs(axis))] < 0:  # a fixed direction, whatever SVD's sign
            proj = -proj
        rank = np.argsort(np.argsort(proj, kind="stable"), kind="stable")
        lab60[vox] = np.array(kids, np.int16)[rank * len(kids) // len(vox)]
    _STUDY_ATLAS.update(mask=mask.reshape(QSDR_DIM), scale33=lab33.reshape(QSDR_DIM),
                        scale60=lab60.reshape(QSDR_DIM), regions=regions)
    return _STUDY_ATLAS


def _region_centroids(vol, n_regions):
    ras = _qsdr_centres()
    lab = vol.reshape(-1)
    keep = lab > 0
    count = np.bincount(lab[keep], minlength=n_regions + 1)
    sums = np.stack([np.bincount(lab[keep], ras[keep, a], minlength=n_regions + 1)
                     for a in range(3)], axis=1)
    return sums[1:] / count[1:, None]


def study_connectome(seed: int = 0) -> np.ndarray:
    """Each scale33 region pair's share of a control scan's streamlines: (83, 83), upper
    triangle (a < b), summing to 1. Short-range pairs within a hemisphere, homotopic
    pairs, thalamo-cortical, striatal, limbic and brain-stem projections are likely; each
    pair's rate varies (log-normal, from ``seed``); the weakest are left out (a sparse
    connectome); the planted pair gets ``PLANTED_SHARE``.

    Parameters
    ----------
    seed : int, optional
        Seed of the per-pair rate variation (default 0); the geometry does not depend on it.

    Returns
    -------
    numpy.ndarray
        float64 (83, 83) shares, entry [a - 1, b - 1] for scale33 regions a < b; zero on
        and below the diagonal and for unconnected pairs.
    """
    atlas = study_atlas()
    rows = atlas["regions"]["scale33"]
    n = len(rows)
    cen = _region_centroids(atlas["scale33"], n)
    d = np.sqrt(((cen[:, None, :] - cen[None, :, :]) ** 2).sum(axis=2))
    hemi = np.array([r["hemisphere"] for r in rows])
    cortical = np.array([r["region"] == "cortical" for r in rows])
    name = [r["name"] for r in rows]
    base = [nm.split(".", 1)[-1].split("-", 1)[-1] for nm in name]
    same = hemi[:, None] == hemi[None, :]
    stem = np.array([nm == "Brain-Stem" for nm in name])
    sub = ~cortical & ~stem
    w = np.zeros((n, n))
    cc = cortical[:, None] & cortical[None, :]
    w[cc & same] = np.exp(-d[cc & same] / 22.0)
    w[cc & ~same] = 0.04 * np.exp(-d[cc & ~same] / 40.0)
    homotopic = np.array([[cortical[a] and cortical[b] and base[a] == base[b] and a != b
                           for b in range(n)] for a in range(n)])
    w[homotopic] = 0.3
    kind = {nm: nm.split("-", 1)[1] for nm in name if "-" in nm and nm != "Brain-Stem"}
    for a in range(n):
        for b in range(n):
            if a == b or not (same[a, b] or stem[a] or stem[b]):
                continue
            ka, kb = kind.get(name[a]), kind.get(name[b])
            if sub[a] and cortical[b]:
                if ka == "Thalamus-Proper":
                    w[a, b] = 0.12 * np.exp(-d[a, b] / 80.0)
                elif ka in ("Caudate", "Putamen", "Accumbens-area"):
                    w[a, b] = 0.15 * np.exp(-d[a, b] / 35.0)
                elif ka in ("Hippocampus", "Amygdala"):
                    w[a, b] = np.exp(-d[a, b] / 20.0)
            elif sub[a] and sub[b]:
                w[a, b] = 0.3 * np.exp(-d[a, b] / 25.0)
            elif stem[a] and (sub[b] or cortical[b]):
                motor = base[b] in ("precentral", "postcentral", "paracentral")
                w[a, b] = 0.25 if motor else 0.4 if kb == "Thalamus-Proper" else 0.0
    w = np.triu(np.maximum(w, w.T), 1)
    w[d > 140] = 0.0  # their streamlines would be longer than MAX_MM
    rng = np.random.default_rng([seed, 1])
    w *= rng.lognormal(0.0, 0.6, w.shape)
    nz = w[w > 0]
    w[w < np.quantile(nz, 0.45)] = 0.0  # sparse: under half of all pairs are connected
    a, b = sorted(name.index(p) for p in PLANTED)
    w[a, b] = 0.0
    w[a, b] = PLANTED_SHARE / (1.0 - PLANTED_SHARE) * w.sum()
    return w / w.sum()


# the fates of a streamline besides running from parcel to parcel (same in every scan):
# one end stops in white matter, both do, or it overshoots its start out of the mask
SHARE_ONE_END_WM = 0.10
SHARE_BOTH_ENDS_WM = 0.03
SHARE_LEAVES_MASK = 0.03
STEP_MM = 1.0
MIN_MM, MAX_MM = 20.0, 200.0


def _parcel_index(vol):
    """(voxel flat indices sorted by label, start of each label) of a label volume."""
    lab = vol.reshape(-1)
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(int(lab.max()) + 2))
    return order, starts


def study_streamlines(rng, a_ids, b_ids, step_mm: float = STEP_MM):
    """Smooth streamlines from a point of parcel ``a_ids[s]`` to one of ``b_ids[s]`` (scale33
    ids), in QSDR voxmm, all vectorised.

    Returns (points, counts, keep): ``keep`` says which of the S drawn streamlines
    were kept (length within MIN_MM..MAX_MM, as DSI Studio's length thresholds).
    Each is a cubic Bezier curve between a random point of each parcel, its two inner
    control points pulled towards the white matter of the hemisphere (towards the
    corpus callosum for pairs across the midline), sampled every ~``step_mm``. Some stop
    in white matter at one or both ends (premature termination), some overshoot their
    start out of the brain (still inside the grid); half run backwards.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random generator (its state advances).
    a_ids : numpy.ndarray
        (S,) int scale33 region ids (1..83) of one end of each streamline.
    b_ids : numpy.ndarray
        (S,) int scale33 region ids of the other end.
    step_mm : float, optional
        The approximate distance between consecutive points, mm (default ``STEP_MM``).

    Returns
    -------
    points : numpy.ndarray
        float32 (P, 3) points of the kept streamlines, one after the other, in voxmm of
        the QSDR grid.
    counts : numpy.ndarray
        int64 (K,) points per kept streamline (at least 2 each; summing to P).
    keep : numpy.ndarray
        bool (S,): which of the drawn streamlines were kept (K of them), in draw order.
    """
    atlas = study_atlas()
    order, starts = _parcel_index(atlas["scale33"])
    n = a_ids.shape[0]

    def endpoint(ids):
        size = starts[ids + 1] - starts[ids]
        flat = order[starts[ids] + (rng.random(n) * size).astype(np.int64)]
        vox = np.stack(np.unravel_index(flat, QSDR_DIM), axis=1)
        return (vox + rng.uniform(0.05, 0.95, (n, 3))) * 2.0  # voxmm

    p0, p3 = endpoint(a_ids), endpoint(b_ids)
    ras0, ras3 = _voxmm_to_ras(p0), _voxmm_to_ras(p3)
    cross = np.sign(ras0[:, 0]) * np.sign(ras3[:, 0]) < 0
    side = np.where(np.abs(ras0[:, 0]) > np.abs(ras3[:, 0]), np.sign(ras0[:, 0]),
                    np.sign(ras3[:, 0]))
    hub = np.zeros((n, 3))
    hub[:, 0] = np.where(cross, 0.0, 22.0 * side)
    hub[:, 1:] = BRAIN_CENTRE[1:] + (0.0, 4.0)
    hub = _ras_to_voxmm(hub + rng.normal(0.0, 6.0, (n, 3)))
    chord = np.linalg.norm(p3 - p0, axis=1)

    def control(p):
        to_hub = hub - p
        dist = np.linalg.norm(to_hub, axis=1)
        reach = np.minimum(0.3 * chord + 12.0, 0.8 * dist) * rng.uniform(0.8, 1.2, n)
        return p + to_hub * (reach / np.maximum(dist, 1e-9))[:, None]

    p1, p2 = control(p0), control(p3)
    # the part of the curve kept: t0..t1 (t0 < 0: overshoot backwards out of the start)
    fate = rng.random(n)
    t0, t1 = np.zeros(n), np.ones(n)
    one = fate < SHARE_ONE_END_WM
    cut = rng.uniform(0.15, 0.45, n)
    at_start = rng.random(n) < 0.5
    t0[one & at_start] = cut[one & at_start]
    t1[one & ~at_start] = 1.0 - cut[one & ~at_start]
    both = (fate >= SHARE_ONE_END_WM) & (fate < SHARE_ONE_END_WM + SHARE_BOTH_ENDS_WM)
    t0[both] = rng.uniform(0.15, 0.35, both.sum())
    t1[both] = rng.uniform(0.65, 0.85, both.sum())
    out = fate >= 1.0 - SHARE_LEAVES_MASK
    speed0 = 3.0 * np.linalg.norm(p1 - p0, axis=1)  # |B'(0)|, mm per unit t
    t0[out] = -rng.uniform(4.0, 14.0, out.sum()) / np.maximum(speed0[out], 1e-9)
    # length of the whole curve ~ (chord + control polygon) / 2; points every ~step_mm
    poly = (np.linalg.norm(p1 - p0, axis=1) + np.linalg.norm(p2 - p1, axis=1)
            + np.linalg.norm(p3 - p2, axis=1))
    length = 0.5 * (chord + poly) * (t1 - t0)
    counts = np.maximum(np.rint(length / step_mm).astype(np.int64) + 1, 2)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    # t of point k: ts + k * dt (half of them run backwards: from t1 to t0)
    backwards = rng.random(n) < 0.5
    ts = np.where(backwards, t1, t0)
    dt = (np.where(backwards, t0, t1) - ts) / (counts - 1.0)
    sl = np.repeat(np.arange(n), counts)
    t = ts[sl] + (np.arange(total) - first[sl]) * dt[sl]
    # the curve as a polynomial in t (Horner), one axis at a time
    coef = (p0, 3.0 * (p1 - p0), 3.0 * (p2 - 2.0 * p1 + p0), p3 - 3.0 * p2 + 3.0 * p1 - p0)
    hi = np.asarray(QSDR_DIM, dtype=np.float64) * 2.0 - 0.05
    pts = np.empty((total, 3), dtype=np.float32)
    for ax in range(3):
        c0, c1, c2, c3 = (c[:, ax][sl] for c in coef)
        # an overshoot may not leave the grid: keep every point inside it
        pts[:, ax] = np.clip(c0 + t * (c1 + t * (c2 + t * c3)), 0.05, hi[ax])
    # DSI Studio's length thresholds: streamlines outside MIN_MM..MAX_MM are not kept
    if n == 0:
        return pts, counts, np.zeros(0, dtype=bool)
    d = np.diff(pts, axis=0)
    step = np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2)
    step[first[1:] - 1] = 0.0  # from one streamline's last point to the next one's first
    lengths = np.add.reduceat(np.append(step, np.float32(0.0)), first)
    keep = (lengths >= MIN_MM) & (lengths <= MAX_MM)
    return pts[np.repeat(keep, counts)], counts[keep], keep


# the b0 scan: its subject's native grid (LAS, as dcm2niix writes) and where the template
# brain lies in it (a small rotation about x, a scaling and a shift)
B0_DIM = (96, 110, 66)
B0_AFFINE = np.array([[-1.8, 0, 0, 86.0], [0, 1.8, 0, -120.0], [0, 0, 2.2, -55.0], [0, 0, 0, 1]])
B0_PITCH_DEG, B0_SCALE, B0_SHIFT = 4.0, 0.97, np.array([1.5, -4.0, 6.0])


def _template_to_b0_ras(ras):
    c, s = np.cos(np.radians(B0_PITCH_DEG)), np.sin(np.radians(B0_PITCH_DEG))
    rot = np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]]) * B0_SCALE
    return _affine(rot, ras) + B0_SHIFT, rot


def b0_study_files():
    """(b0 label volumes {scale: int16 array in B0_DIM}, (mx, my, mz) int32 per QSDR voxel
    in Fortran order) for the b0 scan: DSI Studio's mapping of QSDR voxels to the b0
    volume conformed by dsi2's rule (here: y flipped, as the affine's [1, 1] > 0).

    Returns
    -------
    vols : dict
        "scale33" and "scale60" -> int16 label array of shape ``B0_DIM`` (affine
        ``B0_AFFINE``): each b0 voxel's template label, 0 outside the QSDR grid.
    mapping : tuple of numpy.ndarray
        (mx, my, mz): int32 arrays with one entry per QSDR voxel in Fortran order, the b0
        voxel index each maps to (clipped to the b0 grid; my counted from the flipped y).
    """
    atlas = study_atlas()
    qsdr = np.stack(np.unravel_index(np.arange(int(np.prod(QSDR_DIM))), QSDR_DIM, order="F"), 1)
    ras = _affine(QSDR_AFFINE, qsdr)
    b0_ras, rot = _template_to_b0_ras(ras)
    w = np.rint(_affine(np.linalg.inv(B0_AFFINE), b0_ras)).astype(np.int64)
    w = np.clip(w, 0, np.asarray(B0_DIM) - 1)  # the grid's far corners: background anyway
    mx, my, mz = w[:, 0], B0_DIM[1] - 1 - w[:, 1], w[:, 2]
    # the b0 atlas: each b0 voxel takes the template label it lies in
    b0_ijk = np.indices(B0_DIM).reshape(3, -1).T
    tmpl = _affine(np.linalg.inv(rot), _affine(B0_AFFINE, b0_ijk) - B0_SHIFT)
    v = np.rint(_affine(np.linalg.inv(QSDR_AFFINE), tmpl)).astype(np.int64)
    inside = np.all((v >= 0) & (v < np.asarray(QSDR_DIM)), axis=1)
    vols = {}
    for scale in STUDY_SCALES:
        lab = np.zeros(b0_ijk.shape[0], dtype=np.int16)
        lab[inside] = atlas[scale][tuple(v[inside].T)]
        vols[scale] = lab.reshape(B0_DIM)
    return vols, tuple(m.astype(np.int32) for m in (mx, my, mz))


def study_pair_id(names, scale="scale33") -> int:
    """Connection id (numbering from 1) of a pair of region names in the study's atlas.

    Parameters
    ----------
    names : sequence of str
        The two region names (e.g. ``PLANTED``), in either order.
    scale : str, optional
        "scale33" (default) or "scale60".

    Returns
    -------
    int
        The pair's connection id in that scale's region list (``expected_id``).

    Raises
    ------
    StopIteration
        If a name is not a region of that scale.
    """
    rows = study_regions()[scale]
    ids = sorted(next(r["id"] for r in rows if r["name"] == n) for n in names)
    return expected_id(ids[0], ids[1], len(rows))


def subject_factors(seed: int, subject: int, n_pairs: int, planted: int,
                    sd: float = SUBJECT_SD) -> np.ndarray:
    """One subject's own connectome: a log-normal factor (median 1, log-sd ``sd``) per
    connected region pair, drawn once per subject from (seed, subject), so that the scans
    of one subject share it. The planted pair keeps factor 1: its group effect stays as
    strong as in a study without repeats.

    Parameters
    ----------
    seed : int
        The study's seed.
    subject : int
        The subject's number (0-based).
    n_pairs : int
        The number of connected region pairs.
    planted : int
        The planted pair's position among them.
    sd : float, optional
        The factors' log-sd (default ``SUBJECT_SD``).

    Returns
    -------
    numpy.ndarray
        float64 (n_pairs,) factors, 1.0 at ``planted``.
    """
    f = np.random.default_rng([seed, 4, subject]).lognormal(0.0, sd, n_pairs)
    f[planted] = 1.0
    return f


def make_study_demo(folder, seed: int = 0, n_scans: int = 20, n_streamlines: int = 20_000,
                    step_mm: float = STEP_MM, repeats: int = 1) -> Path:
    """Write the demo study into ``folder``; returns the path of its local_data.json.

    ``n_scans`` scans (half controls, half patients, in an order drawn from ``seed``),
    each with about ``n_streamlines`` streamlines (+-10% per scan) from one connectome
    (``study_connectome(seed)``, Poisson counts per region pair), except that patients
    have ``EFFECT`` times the controls' rate between the ``PLANTED`` regions. Scan 2 has
    its atlases in b0 space with a .fib.gz mapping, scan 3 is a .tck, scan 4 reads its
    scale60 region list from a label table; the others are .trk files with their QSDR
    atlases and graphml region lists. What was planted, and the streamline counts that
    were drawn, are in ``truth.json`` and ``TRUTH.md``.

    ``repeats`` > 1: the ``n_scans`` scans are ``n_scans / repeats`` subjects with
    ``repeats`` consecutive scans each (one ``subject_id``, group and attributes), and
    each subject has its own connectome: the study's rates times ``subject_factors``
    (log-normal, log-sd ``SUBJECT_SD``, drawn once per subject), on top of which every
    scan draws its own Poisson counts and streamline geometry. So a subject's scans are
    more alike than two subjects' scans, as repeat scans of real subjects are.
    ``repeats=1`` writes the study without repeats (the default, byte for byte).

    Parameters
    ----------
    folder : str or os.PathLike
        The study's folder, made if absent; files already there are overwritten.
    seed : int, optional
        The seed of everything random (default 0): the same seed gives the same study.
    n_scans : int, optional
        The number of scans (default 20); at least 4 subjects are needed.
    n_streamlines : int, optional
        About how many streamlines each scan draws (default 20,000), before those outside
        the length thresholds are left out.
    step_mm : float, optional
        The approximate distance between consecutive points, mm (default ``STEP_MM``).
    repeats : int, optional
        Scans per subject (default 1); must divide ``n_scans``.

    Returns
    -------
    pathlib.Path
        ``folder / "local_data.json"``.

    Raises
    ------
    ValueError
        If ``repeats`` is below 1 or does not divide ``n_scans``, or there are fewer than 4
        subjects (``n_scans / repeats``).
    """
    if repeats < 1 or n_scans % repeats:
        raise ValueError(f"repeats {repeats}: must be >= 1 and divide the number of scans "
                         f"({n_scans})")
    n_subjects = n_scans // repeats
    if n_subjects < 4:
        raise ValueError("the demo study needs at least 4 subjects (2 per group)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "atlases").mkdir(exist_ok=True)
    atlas = study_atlas()
    regions = atlas["regions"]
    for scale, rows in regions.items():
        write_study_graphml(folder / "atlases" / f"{scale}.graphml", rows,
                            _region_centroids(atlas[scale], len(rows)))
    write_study_lut(folder / "atlases" / "scale60_LUT.txt", regions["scale60"])
    write_bytes(folder / "atlases" / "mask.nii.gz",
                 nifti_gz_bytes(atlas["mask"].astype(np.uint8), QSDR_AFFINE))
    qsdr_atlas = {s: nifti_gz_bytes(atlas[s], QSDR_AFFINE) for s in STUDY_SCALES}
    share = study_connectome(seed)
    rows33 = regions["scale33"]
    iu = np.nonzero(share)
    pa, pb = sorted(next(r["id"] for r in rows33 if r["name"] == n) for n in PLANTED)
    planted = np.flatnonzero((iu[0] == pa - 1) & (iu[1] == pb - 1))[0]
    rng = np.random.default_rng([seed, 2])
    n_pat = n_subjects // 2
    # per subject (one row per scan with repeats): group and attributes
    groups = np.repeat(rng.permutation(["control"] * (n_subjects - n_pat) + ["patient"] * n_pat),
                       repeats)
    ages = np.repeat(np.clip(np.rint(rng.normal(45, 13, n_subjects)), 19, 78).astype(int),
                     repeats)
    sexes = np.repeat(rng.choice(["F", "M"], n_subjects), repeats)
    hands = np.repeat(rng.choice(["R", "L"], n_subjects, p=[0.9, 0.1]), repeats)
    width = max(2, len(str(n_scans)))
    subject_width = max(2, len(str(n_subjects)))
    b0_scan, tck_scan, table_scan = 1, 2, 3
    scans, truth_scans = [], {}
    for s in range(n_scans):
        scan_id = f"s{s + 1:0{width}d}"
        sdir = folder / scan_id
        sdir.mkdir(exist_ok=True)
        srng = np.random.default_rng([seed, 3, s])
        n_scan = int(round(n_streamlines * srng.uniform(0.9, 1.1)))
        lam = n_scan * share[iu]
        if repeats > 1:
            f = subject_factors(seed, s // repeats, lam.shape[0], planted)
            lam *= f * (share[iu].sum() / (share[iu] * f).sum())  # about n_scan in all
        if groups[s] == "patient":
            lam[planted] *= EFFECT
        counts = srng.poisson(lam)
        order = srng.permutation(int(counts.sum()))
        a_ids = np.repeat(iu[0] + 1, counts)[order]
        b_ids = np.repeat(iu[1] + 1, counts)[order]
        points, n_points, kept = study_streamlines(srng, a_ids, b_ids, step_mm)
        drawn = np.repeat(np.arange(counts.shape[0]), counts)[order][kept]
        record = {
            "scan_id": scan_id, "subject_id": f"sub-{s // repeats + 1:0{subject_width}d}",
            "scan_group": str(groups[s]), "study": "ltpa-demo", "software": "DSI Studio",
            "reconstruction": "qsdr", "trk_space": "qsdr",
            "length_min": int(MIN_MM), "length_max": int(MAX_MM), "cutoff_angle": 60,
            "attributes": {"age": int(ages[s]), "sex": str(sexes[s]),
                           "handedness": str(hands[s])},
        }
        if s == tck_scan:
            write_tck_flat(sdir / f"{scan_id}.tck", _voxmm_to_ras(points).astype(np.float32),
                           n_points)
            record["trk_file"] = f"{scan_id}/{scan_id}.tck"
        else:
            write_trk_flat(sdir / f"{scan_id}.trk", points, n_points)
            record["trk_file"] = f"{scan_id}/{scan_id}.trk"
        record["pkl_path"] = f"{scan_id}/{scan_id}.pkl"
        record["pkl_trk_path"] = f"{scan_id}/{scan_id}.pkl.trk"
        if s == b0_scan:
            import gzip
            import io

            from scipy.io import savemat

            vols, (mx, my, mz) = b0_study_files()
            fib = f"{scan_id}/{scan_id}.src.gz.qsdr.2.fib.gz"
            mat = io.BytesIO()
            savemat(mat, {"dimension": np.array(QSDR_DIM, np.int32).reshape(1, 3),
                          "mx": mx, "my": my, "mz": mz}, format="4")
            write_bytes(folder / fib, gzip.compress(mat.getvalue(), compresslevel=6, mtime=0))
            record["fib_file"] = fib
        labels = []
        for scale, n_regions in STUDY_SCALES.items():
            entry = {"name": "Lausanne2008", "parameters": {"scale": int(scale[5:]), "thick": 1},
                     "notes": "synthetic Lausanne 2008 parcellation (ltpa demo)"}
            if scale == "scale60" and s == table_scan:  # the same region list, as a table
                entry["labels_path"] = "atlases/scale60_LUT.txt"
            else:
                entry["graphml_path"] = f"atlases/{scale}.graphml"
            entry["numpy_path"] = f"{scan_id}/{scale}.npy"
            entry["volume_path"] = f"{scan_id}/{scan_id}.{scale}.QSDR.nii.gz"
            if s == b0_scan:
                entry["b0_volume_path"] = f"{scan_id}/{scan_id}.{scale}.b0.nii.gz"
                write_bytes(folder / entry["b0_volume_path"],
                             nifti_gz_bytes(vols[scale], B0_AFFINE))
            else:
                write_bytes(folder / entry["volume_path"], qsdr_atlas[scale])
            labels.append(entry)
        record["track_labels"] = labels
        scans.append(record)
        truth_scans[scan_id] = {
            "scan_group": str(groups[s]), "n_streamlines": int(n_points.shape[0]),
            "planted_pair_drawn": int(np.count_nonzero(drawn == planted)),
            "planted_pair_expected": round(float(lam[planted]), 2),
            "trk_file": record["trk_file"],
        }
    _write_study_truth(folder, seed, n_streamlines, step_mm, scans, truth_scans,
                       *(scans[i]["scan_id"] for i in (b0_scan, tck_scan, table_scan)),
                       repeats=repeats)
    out = folder / "local_data.json"
    write_bytes(out, (json.dumps(scans, indent=2) + "\n").encode())
    return out


def _write_study_truth(folder, seed, n_streamlines, step_mm, scans, truth_scans, b0_id,
                       tck_id, table_id, repeats=1):
    regions = study_regions()
    by_name = {s: {r["name"]: r for r in rows} for s, rows in regions.items()}
    ids33 = [by_name["scale33"][n]["id"] for n in PLANTED]
    ids60 = [[r["id"] for r in regions["scale60"] if r["parent"] == n] for n in PLANTED]
    truth = {
        "what": "the ltpa demo study: synthetic, with one planted group effect",
        "seed": seed, "n_streamlines_per_scan": n_streamlines, "step_mm": step_mm,
        "planted": {
            "regions": list(PLANTED), "atlas": "scale33", "region_ids": ids33,
            "connection_id": study_pair_id(PLANTED), "connection_ids_start_at": 1,
            "patients_over_controls": EFFECT, "share_of_control_streamlines": PLANTED_SHARE,
            "scale60_region_ids": ids60,
        },
        "other_pairs": "same rates in both groups (Poisson counts per scan)",
        "streamline_fates": {"one_end_in_white_matter": SHARE_ONE_END_WM,
                             "both_ends_in_white_matter": SHARE_BOTH_ENDS_WM,
                             "overshoots_out_of_the_mask": SHARE_LEAVES_MASK},
        "b0_scan": b0_id, "tck_scan": tck_id, "label_table_scan": table_id,
        "scans": truth_scans,
    }
    if repeats > 1:
        truth["repeats"] = {
            "scans_per_subject": repeats, "subject_factor_log_sd": SUBJECT_SD,
            "what": "each subject's rate per region pair is the study's times a log-normal "
                    "factor drawn once per subject (the planted pair: factor 1); each scan "
                    "draws its own Poisson counts and streamlines",
        }
    write_bytes(folder / "truth.json", (json.dumps(truth, indent=2) + "\n").encode())
    groups = {g: [s["scan_id"] for s in scans if s["scan_group"] == g]
              for g in ("control", "patient")}
    a, b = PLANTED
    pair_id = study_pair_id(PLANTED)
    paragraphs = [
        "# The ltpa demo study: what was planted",
        f"A synthetic study written by `ltpa demo` (seed {seed}) to try the workflow on and to "
        f"check it against a known answer. Nothing here is real data.",
        f"- **Brain**: an ellipsoid in DSI Studio's QSDR 2 mm grid (79x95x69, LPS) with a "
        f"midline fissure and a brain stem (`atlases/mask.nii.gz`).\n"
        f"- **Atlases**: two nested parcellations with the Lausanne 2008 names and numbering, "
        f"`scale33` (83 regions, `atlases/scale33.graphml`) and `scale60` (129 regions, "
        f"`atlases/scale60.graphml`; scan `{table_id}` reads the same list from the label "
        f"table `atlases/scale60_LUT.txt`). Cortical parcels tile the outer shell and the "
        f"medial wall, split left/right; subcortical nuclei and the brain stem are compact "
        f"blobs; the rest of the mask is white matter (unlabeled).\n"
        f"- **Scans**: {len(scans)}, {len(groups['control'])} controls and "
        f"{len(groups['patient'])} patients, each with about {n_streamlines:,} smooth "
        f"streamlines (cubic curves with a point every ~{step_mm:g} mm, {MIN_MM:g}-{MAX_MM:g} "
        f"mm long) drawn between parcels from one fixed connectome, with Poisson counts per "
        f"region pair and scan. {SHARE_ONE_END_WM:.0%} stop in white matter at one end, "
        f"{SHARE_BOTH_ENDS_WM:.0%} at both, {SHARE_LEAVES_MASK:.0%} overshoot their start out "
        f"of the brain (all stay inside the grid).\n"
        f"- Scan `{b0_id}` has its atlases in b0 space with DSI Studio's `.fib.gz` mapping (the "
        f"workflow maps them to QSDR first); scan `{tck_id}` is an MRtrix `.tck`.",
        "## The planted effect",
        f"**Patients have {1 - EFFECT:.0%} fewer streamlines between `{a}` and `{b}`** than "
        f"controls: scale33 regions {ids33[0]} and {ids33[1]}, connection id {pair_id} (ids "
        f"numbered from 1), {PLANTED_SHARE:.1%} of a control scan's streamlines. Every other "
        f"pair has the same rate in both groups: a correct chain from streamlines to group "
        f"statistics finds this pair, and only this one, with patients/controls about "
        f"{EFFECT}. At scale60 the effect is spread over the pairs of sub-parcels {ids60[0]} "
        f"x {ids60[1]}.",
        "`truth.json` gives, per scan, the group and how many streamlines were drawn between "
        "the pair (`planted_pair_drawn`); the labeled count is lower by those that stop in "
        "white matter before reaching one of the two regions.",
        f"Controls: {', '.join(groups['control'])}.\nPatients: {', '.join(groups['patient'])}.",
    ]
    if repeats > 1:
        paragraphs += [
            "## Repeat scans",
            f"Each subject has {repeats} scans (one `subject_id`). Each subject has its own "
            f"connectome: the study's rate of every region pair times a log-normal factor "
            f"(median 1, log-sd {SUBJECT_SD}) drawn once per subject (the planted pair keeps "
            f"factor 1); each scan then draws its own Poisson counts and streamlines. So the "
            f"termination patterns of one subject's scans are more alike than those of two "
            f"subjects (within-subject similarity above between-subject similarity).",
        ]
    text = "\n\n".join(paragraphs) + "\n"
    write_bytes(folder / "TRUTH.md", text.encode())
