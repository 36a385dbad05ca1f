"""Shared by the LTPA tests: a small demo study of every scan kind, and slow references."""

import gzip
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from ltpa import TrackDataSource


def build_study(folder, n_scans=4, n_streamlines=1200, seed=0, extra_formats=True):
    """The demo study (``make_study_demo``: .trk scans, a b0-space scan, a .tck) with every
    output made by the workflow's steps; with ``extra_formats`` two more scans: the first
    scan's streamlines as a .trk.gz and as a .trx (the same subject)."""
    from ltpa.demo.study import make_study_demo
    from ltpa.jobs.pipeline import run
    from ltpa.study.config import default_config
    from ltpa.study.study import load_study

    path = make_study_demo(folder, n_scans=n_scans, n_streamlines=n_streamlines, seed=seed)
    scans = json.loads(path.read_text())
    if extra_formats:
        first = scans[0]
        trk = path.parent / first["trk_file"]
        with open(trk, "rb") as fin, gzip.open(trk.parent / "gz.trk.gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        _write_trx(trk, trk.parent / "x.trx")
        for suffix, name in ((".trk.gz", "gz"), (".trx", "x")):
            rec = json.loads(json.dumps(first))
            rec["scan_id"] = f"{first['scan_id']}{name}"
            rec["trk_file"] = f"{Path(first['trk_file']).parent}/{name}{suffix}"
            rec["pkl_path"] = f"{Path(first['pkl_path']).parent}/{name}.pkl"
            rec.pop("pkl_trk_path", None)
            for lab in rec["track_labels"]:
                npy = Path(lab["numpy_path"])
                lab["numpy_path"] = str(npy.parent / f"{name}.{npy.name}")
            scans.append(rec)
        path.write_text(json.dumps(scans, indent=1))
    config = default_config()
    targets = load_study(path, config, check_inputs_of_jobs=False).targets
    for t in sorted(targets, key=lambda t: t.rule != "map_b0_atlas"):
        run(t.spec(config))
    return path


def _write_trx(trk_path, out):
    from trx.trx_file_memmap import TrxFile, save

    trk = nib.streamlines.load(str(trk_path))
    ref = nib.Nifti1Image(np.zeros(trk.header["dimensions"], np.int16),
                          trk.header["voxel_to_rasmm"])
    trx = TrxFile.from_tractogram(trk.tractogram, reference=ref)
    save(trx, str(out))
    trx.close()


def source_of(path, atlas=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = TrackDataSource(path, **kw)
    if atlas is not None:
        src.change_atlas(**atlas)
    return src


def sphere_voxels(ijk, radius, dim):
    """The sphere around ``ijk``, clipped to the grid: a plain triple loop."""
    out = []
    i, j, k = (int(v) for v in ijk)
    for a in range(-radius, radius + 1):
        for b in range(-radius, radius + 1):
            for c in range(-radius, radius + 1):
                if a * a + b * b + c * c <= radius * radius:
                    v = (i + a, j + b, k + c)
                    if all(0 <= v[x] < dim[x] for x in range(3)):
                        out.append(v)
    return out


def brute_patterns(source, ijk, radius, dim):
    """Per scan, {connection id: distinct streamlines} in the sphere, from ``query_ijk`` of
    the sphere's voxels and the npy, counted with numpy."""
    voxels = sphere_voxels(ijk, radius, dim)
    results = source.query_ijk(voxels) if voxels else None
    out = []
    for pos in range(len(source)):
        if results is None or len(results[pos]) == 0:
            out.append({})
            continue
        conn = results[pos].connections
        ids, counts = np.unique(conn, return_counts=True)
        out.append(dict(zip(ids.tolist(), counts.tolist())))
    return out
