"""The tests' small fixture (``make_demo``; ``ltpa demo --small``), modelled on dsi2's own test
data: cube regions for the brainstem (83) and the left/right precentral gyrus, at two atlas
scales ("scale33": precentral 51/10; "scale60": each precentral cube split in two along y,
80/81 and 16/17), and streamlines running from the brainstem to a precentral cube, plus
streamlines that stay in white matter (connection id 0). The connection id each streamline
must get is written to ``expected/<scan>.<atlas>.npy`` from the region pairs the
streamlines were drawn between, so a run can be checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..formats.grids import QSDR_AFFINE, QSDR_DIM, QSDR_VOXEL_SIZE
from ..formats.trkwrite import write_trk
from ..prepared.connections import connection_id

BRAINSTEM = 83
CUBES = {  # name: (imin, imax, jmin, jmax, kmin, kmax), inclusive voxel bounds (dsi2's)
    "brainstem": (36, 40, 46, 50, 14, 20),
    "lh.precentral": (50, 58, 40, 51, 45, 50),
    "rh.precentral": (20, 28, 40, 51, 45, 50),
}
SCALE33 = {"brainstem": BRAINSTEM, "lh.precentral": 51, "rh.precentral": 10}
# scale60: precentral split at the middle of y; (lower half, upper half)
SCALE60_SPLIT = {"lh.precentral": (80, 81), "rh.precentral": (16, 17)}
N_REGIONS = {"scale33": 83, "scale60": 129}


def _cube_voxels(bounds):
    i0, i1, j0, j1, k0, k1 = bounds
    g = np.mgrid[i0:i1 + 1, j0:j1 + 1, k0:k1 + 1]
    return g.reshape(3, -1).T


def atlas_volume(scale: str) -> np.ndarray:
    """The demo's atlas at one scale: the cube regions in the QSDR grid.

    Parameters
    ----------
    scale : str
        ``"scale33"``; any other value gives the scale60 atlas (each precentral cube split
        in two along j).

    Returns
    -------
    numpy.ndarray
        int16 labels of shape ``QSDR_DIM``, 0 outside the cubes.
    """
    data = np.zeros(QSDR_DIM, dtype=np.int16)
    for name, bounds in CUBES.items():
        i0, i1, j0, j1, k0, k1 = bounds
        if scale == "scale33" or name == "brainstem":
            data[i0:i1 + 1, j0:j1 + 1, k0:k1 + 1] = SCALE33[name]
        else:
            mid = (j0 + j1) // 2
            lo, hi = SCALE60_SPLIT[name]
            data[i0:i1 + 1, j0:mid + 1, k0:k1 + 1] = lo
            data[i0:i1 + 1, mid + 1:j1 + 1, k0:k1 + 1] = hi
    return data


_CACHE = {}


def atlas_volume_cache(scale):
    """``atlas_volume(scale)``, made once per process; the same array is returned each time
    (callers must not modify it).

    Parameters
    ----------
    scale : str
        ``"scale33"``, or another value for the scale60 atlas (``atlas_volume``).

    Returns
    -------
    numpy.ndarray
        int16 labels of shape ``QSDR_DIM``, shared between calls.
    """
    if scale not in _CACHE:
        _CACHE[scale] = atlas_volume(scale)
    return _CACHE[scale]


def expected_id(a: int, b: int, n_regions: int, start: int = 1) -> int:
    """Connection id of labels a, b with region list 1..n_regions.

    Parameters
    ----------
    a : int
        The first region's label, 1..n_regions.
    b : int
        The second region's label, 1..n_regions (either order).
    n_regions : int
        The number of regions in the list.
    start : int, optional
        The id of the first pair (``connection_ids_start_at``; default 1).

    Returns
    -------
    int
        The id ``ltpa.prepared.connections.connection_id`` gives the pair.
    """
    return connection_id(a - 1, b - 1, n_regions, start)


def make_streamlines(rng, n_per_side: int, n_background: int):
    """Streamlines in QSDR voxmm; returns (streamlines, endpoint voxel pairs or None).

    ``n_per_side`` streamlines from the brainstem to each precentral cube (bent gently,
    ~1 mm steps, about half of them reversed), then ``n_background`` short ones in white matter
    that touch no region, all shuffled.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random generator (its state advances).
    n_per_side : int
        Streamlines to each of the left and right precentral cubes.
    n_background : int
        Streamlines that touch no region (connection id 0).

    Returns
    -------
    streamlines : list of numpy.ndarray
        2 * n_per_side + n_background float32 (n, 3) arrays (n >= 2), in voxmm of the QSDR
        grid (2 mm voxels).
    ends : list of tuple or None
        Per streamline, in the same order, ((i, j, k) of its first point's voxel, (i, j, k)
        of its last point's), or None for a background streamline.
    """
    bs = _cube_voxels(CUBES["brainstem"])
    streamlines, ends = [], []
    for side in ("lh.precentral", "rh.precentral"):
        pc = _cube_voxels(CUBES[side])
        a = bs[rng.integers(0, len(bs), n_per_side)]
        b = pc[rng.integers(0, len(pc), n_per_side)]
        for va, vb in zip(a, b):
            # from inside the start voxel to inside the end voxel, ~1 mm steps, a gentle bend
            pa = (va + rng.uniform(0.2, 0.8, 3)) * 2.0
            pb = (vb + rng.uniform(0.2, 0.8, 3)) * 2.0
            n = max(int(np.linalg.norm(pb - pa)), 2)
            t = np.linspace(0.0, 1.0, n)[:, None]
            pts = pa + t * (pb - pa)
            bend = np.sin(np.pi * t) * rng.uniform(-3, 3, 3)
            bend[[0, -1]] = 0.0
            pts = pts + bend
            if rng.random() < 0.5:
                pts = pts[::-1]
                va, vb = vb, va
            streamlines.append(pts.astype(np.float32))
            ends.append((tuple(va), tuple(vb)))
    # white-matter streamlines that touch no region: id 0
    for _ in range(n_background):
        # y <= 80 mm and 40 <= z < 90 mm: clear of every cube (j >= 46 with k <= 20, or k >= 45)
        pa = np.array([rng.uniform(60, 100), rng.uniform(60, 70), rng.uniform(50, 70)])
        pb = pa + rng.uniform(-10, 10, 3)
        n = max(int(np.linalg.norm(pb - pa)), 2)
        pts = pa + np.linspace(0, 1, n)[:, None] * (pb - pa)
        streamlines.append(pts.astype(np.float32))
        ends.append(None)
    order = rng.permutation(len(streamlines))
    return [streamlines[i] for i in order], [ends[i] for i in order]


def write_graphml(path: Path, n_regions: int) -> None:
    """Write the region list of a demo atlas as a graphml.

    Nodes ``"1"`` .. ``str(n_regions)``, each with ``dn_name`` ``region_<n>``, except
    ``BRAINSTEM`` (83), named ``Brain-Stem``.

    Parameters
    ----------
    path : pathlib.Path
        The .graphml to write.
    n_regions : int
        The number of regions, 83 or more.

    Raises
    ------
    KeyError
        If ``n_regions`` is below 83 (there is no brainstem node to name).
    """
    import networkx as nx

    g = nx.Graph()
    for r in range(1, n_regions + 1):
        g.add_node(str(r), dn_name=f"region_{r}")
    g.nodes[str(BRAINSTEM)]["dn_name"] = "Brain-Stem"
    nx.write_graphml(g, str(path))


def make_demo(folder, n_scans: int = 3, seed: int = 0, n_per_side: int = 60,
              n_background: int = 40) -> Path:
    """Write the demo study into ``folder``; returns the path of its local_data.json.

    ``folder`` gets the two scales' graphmls (``atlases/``), per scan ``s<n>/`` its .trk
    and its atlas at each scale (``s<n>.<scale>.QSDR.nii.gz``), the expected connection
    ids (``expected/<scan>.<scale>.npy``) and local_data.json naming them and the outputs
    to make (pkl, pkl.trk, ``<scale>.npy``), with relative paths. Scans alternate between
    the groups "control" and "patient".

    Parameters
    ----------
    folder : str or os.PathLike
        The study's folder, made if absent; files already there are overwritten.
    n_scans : int, optional
        The number of scans (default 3).
    seed : int, optional
        The random generator's seed: the same seed gives the same study (default 0).
    n_per_side : int, optional
        Streamlines per precentral cube in the first scan; each later scan has 10 more
        (default 60).
    n_background : int, optional
        Streamlines per scan that touch no region (default 40).

    Returns
    -------
    pathlib.Path
        ``folder / "local_data.json"``.
    """
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "atlases").mkdir(exist_ok=True)
    (folder / "expected").mkdir(exist_ok=True)
    for scale, n in N_REGIONS.items():
        write_graphml(folder / "atlases" / f"{scale}.graphml", n)
    rng = np.random.default_rng(seed)
    groups = ["control", "patient"]
    scans = []
    for s in range(n_scans):
        scan_id = f"s{s + 1}"
        sdir = folder / scan_id
        sdir.mkdir(exist_ok=True)
        streamlines, ends = make_streamlines(rng, n_per_side + 10 * s, n_background)
        write_trk(sdir / f"{scan_id}.trk", streamlines, QSDR_DIM, QSDR_VOXEL_SIZE, "LPS",
                  QSDR_AFFINE)
        labels = []
        for scale, n_regions in N_REGIONS.items():
            vol = atlas_volume_cache(scale)
            nib.Nifti1Image(vol, QSDR_AFFINE).to_filename(sdir / f"{scan_id}.{scale}.QSDR.nii.gz")
            expected = np.array([
                0 if e is None else expected_id(int(vol[e[0]]), int(vol[e[1]]), n_regions)
                for e in ends], dtype=np.int64)
            np.save(folder / "expected" / f"{scan_id}.{scale}.npy", expected)
            labels.append({
                "name": "Lausanne2008",
                "parameters": {"scale": int(scale[5:]), "thick": 1},
                "notes": "synthetic cube regions (ltpa demo)",
                "graphml_path": f"atlases/{scale}.graphml",
                "numpy_path": f"{scan_id}/{scale}.npy",
                "volume_path": f"{scan_id}/{scan_id}.{scale}.QSDR.nii.gz",
            })
        scans.append({
            "scan_id": scan_id,
            "subject_id": f"subj{s + 1}",
            "scan_group": groups[s % 2],
            "study": "ltpa-demo",
            "software": "DSI Studio",
            "reconstruction": "qsdr",
            "trk_space": "qsdr",
            "attributes": {"age": 30 + s, "sex": "F" if s % 2 else "M"},
            "trk_file": f"{scan_id}/{scan_id}.trk",
            "pkl_path": f"{scan_id}/{scan_id}.pkl",
            "pkl_trk_path": f"{scan_id}/{scan_id}.pkl.trk",
            "track_labels": labels,
        })
    out = folder / "local_data.json"
    out.write_text(json.dumps(scans, indent=2) + "\n")
    return out
