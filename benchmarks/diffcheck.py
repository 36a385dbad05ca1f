#!/usr/bin/env python3
"""Differential check of ltpa's outputs against the dsi2 reference loops.

    python diffcheck.py --label LTPA.npy DSI2.npy --index LTPA_NATIVE.pkl DSI2_HASH.pkl

--label: the two arrays of per-streamline connection ids must be identical (values and
         length; dtype may differ).
--index: LTPA_NATIVE.pkl is ``ltpa index TRK OUT.pkl --space native`` loaded with
         ``ltpa.load_track_dataset`` (``.tracks_at_ijk``: (i,j,k) -> sorted ids); it must
         have exactly the dsi2 dict's voxels, each with exactly the dsi2 set of
         (0-based) streamline ids.  Needs a python where ``import ltpa`` works.
Prints one PASS/FAIL line per check; exit 1 if any FAIL.
"""
import argparse
import pickle
import sys

import numpy as np


def check_label(ltpa_npy, dsi2_npy):
    a, b = np.load(ltpa_npy), np.load(dsi2_npy)
    if a.shape != b.shape:
        return f"FAIL label: shape ltpa {a.shape} vs dsi2 {b.shape}"
    if np.array_equal(a, b):
        return f"PASS label: {len(a)} connection ids identical ({int((a > 0).sum())} non-zero)"
    bad = np.flatnonzero(a != b)
    ex = ", ".join(f"#{i}: ltpa {a[i]} dsi2 {b[i]}" for i in bad[:5])
    return f"FAIL label: {len(bad)}/{len(a)} ids differ (e.g. {ex})"


def check_index(ltpa_pkl, dsi2_pkl):
    import ltpa

    ds = ltpa.load_track_dataset(ltpa_pkl)
    with open(dsi2_pkl, "rb") as f:
        ref = pickle.load(f)
    m = ds.tracks_at_ijk
    # contract: ds.keys(); fall back to the mapping's keys()/iteration and say so
    if hasattr(ds, "keys"):
        keys, how = ds.keys(), "ds.keys()"
    elif hasattr(m, "keys"):
        keys, how = m.keys(), "NOTE no ds.keys(), used ds.tracks_at_ijk.keys()"
    else:
        keys, how = iter(m), "NOTE no ds.keys(), used iter(ds.tracks_at_ijk)"
    got_keys = {tuple(int(c) for c in k) for k in keys}
    ref_keys = set(ref)
    info = f"len(ds)={len(ds)}, len(tracks_at_ijk)={len(m)}; {how}"
    if got_keys != ref_keys:
        only_l, only_r = got_keys - ref_keys, ref_keys - got_keys
        return (f"FAIL index: voxel sets differ: {len(only_l)} only in ltpa "
                f"(e.g. {sorted(only_l)[:3]}), {len(only_r)} only in dsi2 "
                f"(e.g. {sorted(only_r)[:3]}); {info}")
    nbad, unsorted, ex = 0, 0, None
    for k in ref_keys:
        ids = np.asarray(m[k]).ravel().tolist()
        if ids != sorted(ids):
            unsorted += 1
        if sorted(ids) != sorted(ref[k]):
            nbad += 1
            if ex is None:
                ex = (k, ids[:8], sorted(ref[k])[:8])
    if nbad or unsorted:
        return (f"FAIL index: {nbad}/{len(ref_keys)} voxels with different ids, "
                f"{unsorted} not sorted; e.g. {ex}; {info}")
    n_ids = sum(len(v) for v in ref.values())
    return f"PASS index: {len(ref_keys)} voxels, {n_ids} (voxel, id) pairs identical; {info}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", nargs=2, metavar=("LTPA_NPY", "DSI2_NPY"))
    ap.add_argument("--index", nargs=2, metavar=("LTPA_PKL", "DSI2_PKL"))
    a = ap.parse_args()
    res = []
    for flag, fn in (("label", check_label), ("index", check_index)):
        args = getattr(a, flag)
        if not args:
            continue
        try:
            res.append(fn(*args))
        except Exception as e:  # report, don't crash the benchmark
            res.append(f"FAIL {flag}: {type(e).__name__}: {e}")
    for r in res:
        print(r, flush=True)
    return 1 if any(r.startswith("FAIL") for r in res) else 0


if __name__ == "__main__":
    sys.exit(main())
