#!/usr/bin/env python3
"""Set up one whole scan for the Snakemake row of run.py.

    python benchmarks/make_scan.py --trk data/synth_1000000.trk --data data --work out/scan_1000000

Writes (once) a second atlas ``atlas42.nii.gz`` + ``atlas42.graphml`` next to
``atlas83.nii.gz`` (labels 1..83 merged pairwise: ``(l + 1) // 2`` -> 1..42, same grid),
and ``<work>/local_data.json`` naming one qsdr scan with ``pkl_path``, ``pkl_trk_path``
and two ``track_labels`` (atlas83, atlas42); outputs go to ``<work>/out/``. Prints the
four output paths, one per line (the Snakemake targets). Needs numpy, nibabel, networkx.
"""
import argparse
import json
from pathlib import Path


def make_atlas42(data: Path):
    vol, gml = data / "atlas42.nii.gz", data / "atlas42.graphml"
    if vol.exists() and gml.exists():
        return vol, gml
    import networkx as nx
    import nibabel as nib
    import numpy as np

    src = nib.load(str(data / "atlas83.nii.gz"))
    lab = np.asarray(src.dataobj).astype(np.int16)
    merged = np.where(lab > 0, (lab + 1) // 2, 0).astype(np.int16)
    img = nib.Nifti1Image(merged, src.affine, src.header)
    img.to_filename(str(vol))
    g = nx.Graph()
    for r in range(1, int(merged.max()) + 1):
        g.add_node(str(r), dn_name=f"merged_{r}")
    nx.write_graphml(g, str(gml))
    return vol, gml


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trk", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    data, work = Path(a.data).resolve(), Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    vol42, gml42 = make_atlas42(data)
    out = work / "out"
    scan = {
        "scan_id": "bench",
        "scan_group": "bench",
        "trk_space": "qsdr",
        "trk_file": str(Path(a.trk).resolve()),
        "pkl_path": str(out / "bench.pkl"),
        "pkl_trk_path": str(out / "bench.pkl.trk"),
        "track_labels": [
            {"name": "atlas83", "graphml_path": str(data / "atlas83.graphml"),
             "volume_path": str(data / "atlas83.nii.gz"), "numpy_path": str(out / "atlas83.npy")},
            {"name": "atlas42", "graphml_path": str(gml42),
             "volume_path": str(vol42), "numpy_path": str(out / "atlas42.npy")},
        ],
    }
    (work / "local_data.json").write_text(json.dumps([scan], indent=2) + "\n")
    for key in ("pkl_path", "pkl_trk_path"):
        print(scan[key])
    for lab in scan["track_labels"]:
        print(lab["numpy_path"])


if __name__ == "__main__":
    main()
