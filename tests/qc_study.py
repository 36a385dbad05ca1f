"""One demo study run through the whole workflow (QC, plots, report), shared by the QC and
report tests (read-only: tests must not change it)."""

from pathlib import Path

from conftest import run_snakemake

_BUILT = {}


def built_study(tmp_path_factory):
    """(workdir, local_data.json, study folder) after a full run; made once per session."""
    if "study" not in _BUILT:
        from ltpa.demo.small import make_demo

        root = tmp_path_factory.mktemp("qc_study")
        local_data = make_demo(root / "study", n_scans=3, seed=1, n_per_side=15, n_background=10)
        work = root / "work"
        run_snakemake(work, local_data=local_data, qc=True)
        _BUILT["study"] = (work, Path(local_data), Path(local_data).parent)
    return _BUILT["study"]


# ------------------------------------------------------------------ synthetic QC tables

SYNTHETIC_ATLASES = {"scale33": 83, "scale60": 129}  # Lausanne 2008 region counts


def write_graphml_with_names(path, n_regions, names=True):
    """A plain GraphML of regions 1..n; with ``names`` each has a ``dn_fsname`` and a
    ``dn_name`` ("ctx-<id>-<letters>"). Returns {region id: dn_name} ({} without names)."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">',
             '<key attr.name="dn_fsname" attr.type="string" for="node" id="d0" />',
             '<key attr.name="dn_name" attr.type="string" for="node" id="d1" />',
             '<graph edgedefault="undirected">']
    for r in range(1, n_regions + 1):
        data = (f'<data key="d0">fs{r}</data><data key="d1">ctx-{r}-{chr(97 + r % 26) * 3}</data>'
                if names else "")
        lines.append(f'<node id="{r}">{data}</node>')
    lines += ["</graph>", "</graphml>"]
    Path(path).write_text("\n".join(lines) + "\n")
    return {r: f"ctx-{r}-{chr(97 + r % 26) * 3}" for r in range(1, n_regions + 1)} if names else {}


def write_synthetic_qc(folder, n_scans, *, atlases=SYNTHETIC_ATLASES, npy_atlases=(),
                       n_streamlines=2000, groups=("control", "patient"), seed=0,
                       high_every=53, low_every=0):
    """QC tables as the qc_scan rule writes them, for ``n_scans`` scans, without a workflow run.

    Per scan: ``qc/scans/<scan>.tsv`` (one row per atlas, ``ltpa.qc.tables.QC_COLUMNS``) and
    ``qc/lengths/<scan>.tsv`` (2 mm length histogram of ``n_streamlines`` streamlines);
    for the atlases in ``npy_atlases`` also ``<scan>/<atlas>.npy`` (connection ids whose
    share of 0 is the row's ``share_unlabeled``) with its sidecar naming the graphml.
    Every ``high_every``-th scan (``low_every``-th) has a share unlabeled far above
    (below) its group's. Returns {"scans": metadata for ``write_summary``, "qc_tsvs",
    "lengths": [(scan_id, group, tsv)], "npys": {atlas: [(scan_id, group, npy)]},
    "graphml": {atlas: path}, "names": {atlas: {region id: dn_name}}}.
    """
    import numpy as np

    from ltpa.qc.tables import LENGTH_BIN_MM, QC_COLUMNS, write_tsv
    from ltpa.study import sidecar

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    (folder / "atlases").mkdir(parents=True, exist_ok=True)
    graphml, names = {}, {}
    for atlas, n in atlases.items():
        graphml[atlas] = folder / "atlases" / f"{atlas}.graphml"
        names[atlas] = write_graphml_with_names(graphml[atlas], n)
    base = {g: 0.15 + 0.1 * i for i, g in enumerate(groups)}
    # a connectome-like spread of pair probabilities, the same for every scan of an atlas
    pair_p = {}
    for atlas in npy_atlases:
        weight = rng.lognormal(0, 1.5, atlases[atlas] * (atlases[atlas] + 1) // 2)
        pair_p[atlas] = weight / weight.sum()
    centres = np.arange(0, 300, LENGTH_BIN_MM) + LENGTH_BIN_MM / 2
    out = {"scans": [], "qc_tsvs": [], "lengths": [], "npys": {a: [] for a in npy_atlases},
           "graphml": graphml, "names": names}
    for s in range(n_scans):
        scan_id, group = f"sub-{s:05d}", groups[s % len(groups)]
        out["scans"].append({"scan_id": scan_id, "scan_group": group, "subject_id": f"subj{s}",
                             "attributes": {"age": 20 + s % 50}})
        # lengths: a gamma-like curve whose peak moves with the group and the scan
        peak = 40 + 15 * groups.index(group) + rng.normal(0, 4)
        p = (centres / peak) ** 3 * np.exp(-3 * centres / peak)
        counts = rng.multinomial(n_streamlines, p / p.sum())
        counts = counts[:np.flatnonzero(counts)[-1] + 1]
        lengths_tsv = folder / "qc" / "lengths" / f"{scan_id}.tsv"
        write_tsv(lengths_tsv, [{"length_mm_from": round(i * LENGTH_BIN_MM, 6),
                                 "length_mm_to": round((i + 1) * LENGTH_BIN_MM, 6), "count": int(c)}
                                for i, c in enumerate(counts)],
                  ["length_mm_from", "length_mm_to", "count"])
        out["lengths"].append((scan_id, group, str(lengths_tsv)))
        rows = []
        for atlas, n_regions in atlases.items():
            share = float(np.clip(base[group] + rng.normal(0, 0.02), 0, 1))
            if high_every and s % high_every == high_every - 1:
                share = min(1.0, share + 0.4)
            if low_every and s % low_every == low_every - 1:
                share = max(0.0, share - 0.14)
            n_unlabeled = int(round(share * n_streamlines))
            never = sorted(rng.choice(np.arange(1, n_regions + 1), 3, replace=False).tolist())
            npy = folder / scan_id / f"{atlas}.npy"
            if atlas in npy_atlases:
                ids = np.concatenate([np.zeros(n_unlabeled, np.int64),
                                      1 + rng.choice(pair_p[atlas].size,
                                                     n_streamlines - n_unlabeled,
                                                     p=pair_p[atlas])])
                npy.parent.mkdir(parents=True, exist_ok=True)
                np.save(npy, rng.permutation(ids))
                sidecar.write(npy, "connection_ids",
                              inputs={"graphml_path": sidecar.file_record(graphml[atlas],
                                                                          npy.parent)},
                              params={"atlas": atlas, "scan_id": scan_id,
                                      "connection_ids_start_at": 1},
                              scan_id=scan_id, atlas=atlas, stats={"region_source": "graphml"},
                              region_ids=list(range(1, n_regions + 1)),
                              connection_ids_start_at=1)
                out["npys"][atlas].append((scan_id, group, str(npy)))
            rows.append({"scan_id": scan_id, "atlas": atlas, "n_streamlines": n_streamlines,
                         "n_unlabeled": n_unlabeled, "share_unlabeled": n_unlabeled / n_streamlines,
                         "n_regions": n_regions, "region_source": "graphml",
                         "n_labels_not_in_region_list": 0, "labels_not_in_region_list": [],
                         "n_regions_never_reached": len(never), "regions_never_reached": never,
                         "n_points": 60 * n_streamlines, "n_points_outside_key_grid": 0,
                         "n_points_outside_atlas_grid": 0, "length_median_mm": peak,
                         "flags": [], "numpy_path": str(npy)})
        qc_tsv = folder / "qc" / "scans" / f"{scan_id}.tsv"
        write_tsv(qc_tsv, rows, QC_COLUMNS)
        out["qc_tsvs"].append(str(qc_tsv))
    return out
