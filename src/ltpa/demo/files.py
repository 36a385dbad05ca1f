"""Writers of the demo's files: .trk and .tck from flat arrays, graphml and LUT region lists,
gzipped NIfTI; each written atomically."""

from __future__ import annotations

import gzip

import networkx as nx
import nibabel as nib
import numpy as np

from ..formats.grids import QSDR_AFFINE, QSDR_DIM, QSDR_VOXEL_SIZE
from ..formats.trkwrite import make_header, records
from ..io import atomic_open


def write_trk_flat(path, points, counts) -> None:
    """A QSDR .trk (LPS, as DSI Studio writes) from one flat (P, 3) voxmm array + counts.

    Parameters
    ----------
    path : str or os.PathLike
        The .trk to write (atomically).
    points : numpy.ndarray
        (P, 3) points of every streamline, one after the other, in voxmm of the QSDR grid.
    counts : numpy.ndarray
        (N,) int points per streamline (summing to P); N is the header's n_count.
    """
    hdr = make_header(QSDR_DIM, QSDR_VOXEL_SIZE, "LPS", QSDR_AFFINE, counts.shape[0])
    with atomic_open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        fh.write(records(points, counts).tobytes())


def write_tck_flat(path, points_ras, counts) -> None:
    """An MRtrix .tck (Float32LE, RAS mm) from one flat (P, 3) array + counts.

    Each streamline's points are followed by a NaN row, the file by an Inf row.

    Parameters
    ----------
    path : str or os.PathLike
        The .tck to write (atomically).
    points_ras : numpy.ndarray
        (P, 3) points of every streamline, one after the other, in RAS mm.
    counts : numpy.ndarray
        (N,) int points per streamline (summing to P).
    """
    n = counts.shape[0]
    rows = np.full((int(counts.sum()) + n + 1, 3), np.nan, dtype="<f4")
    pos = np.arange(points_ras.shape[0]) + np.repeat(np.arange(n), counts)
    rows[pos] = points_ras
    rows[-1] = np.inf
    head = f"mrtrix tracks\ncount: {n}\ndatatype: Float32LE\n"
    offset = 0
    while len(text := f"{head}file: . {offset}\nEND\n".encode()) > offset:
        offset = len(text)  # until the offset's own digits fit before it
    with atomic_open(path, "wb") as fh:
        fh.write(text + b"\0" * (offset - len(text)))
        fh.write(rows.tobytes())


def write_study_graphml(path, rows, centroids) -> None:
    """A region list as the Lausanne 2008 graphml files have it (node attributes dn_name,
    dn_fsname, dn_hemisphere, dn_region, dn_correspondence_id, dn_fs_aseg_val and the
    region's centre dn_position_x/y/z in MNI mm), written by networkx as ``write_graphml``.

    Parameters
    ----------
    path : str or os.PathLike
        The .graphml to write (atomically).
    rows : iterable of dict
        One per region: "id" (the node's id), "name", "fsname", "hemisphere", "region" and
        "aseg" (None: no dn_fs_aseg_val attribute).
    centroids : iterable of sequence of float
        Each region's centre (x, y, z) in MNI mm, rounded to 0.01 mm, in the order of
        ``rows``.
    """
    g = nx.Graph()
    for row, c in zip(rows, centroids):
        attrs = {"dn_region": row["region"], "dn_fsname": row["fsname"],
                 "dn_hemisphere": row["hemisphere"], "dn_correspondence_id": int(row["id"]),
                 "dn_name": row["name"],
                 "dn_fs_aseg_val": None if row["aseg"] is None else str(row["aseg"]),
                 **{f"dn_position_{a}": round(float(x), 2) for a, x in zip("xyz", c)}}
        g.add_node(str(row["id"]), **{k: v for k, v in attrs.items() if v is not None})
    with atomic_open(path, "wb") as fh:
        nx.write_graphml(g, fh)


def write_study_lut(path, rows) -> None:
    """A FreeSurfer-style colour table (``index name R G B A``), as Lausanne's *_LUT.txt.

    A comment line, a blank line, ``0 Unknown`` and one line per region; the colours are
    random but the same each time (seeded), A is 0.

    Parameters
    ----------
    path : str or os.PathLike
        The table to write (atomically).
    rows : sequence of dict
        One per region, with "id" and "name".
    """
    rng = np.random.default_rng(60)
    colours = rng.integers(0, 256, (len(rows), 3))
    lines = ["#No. Label Name:                            R   G   B   A", "",
             f"{0:<4} {'Unknown':<40} {0:>3} {0:>3} {0:>3} {0:>3}"]
    lines += [f"{r['id']:<4} {r['name']:<40} {c[0]:>3} {c[1]:>3} {c[2]:>3} {0:>3}"
              for r, c in zip(rows, colours)]
    with atomic_open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def nifti_gz_bytes(data, affine) -> bytes:
    """A gzipped NIfTI-1 image (mm units), the same bytes for the same data.

    Parameters
    ----------
    data : numpy.ndarray
        The image's voxels (their dtype is kept).
    affine : numpy.ndarray
        The 4x4 voxel-to-mm affine.

    Returns
    -------
    bytes
        The .nii.gz content (gzip level 6, no timestamp).
    """
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    data : bytes
        Its content.
    """
    with atomic_open(path, "wb") as fh:
        fh.write(data)
