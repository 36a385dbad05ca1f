"""Writing a .trk in the key grid (chunked, straight from the mapped input)."""

from __future__ import annotations

import numpy as np
from nibabel.streamlines.trk import header_2_dtype

from .grids import KeyMap
from .io import atomic_open
from .trk import Trk


def key_grid_header(trk: Trk, key_map: KeyMap, n_count: int) -> np.ndarray:
    """A TrackVis v2 header for the key grid (dim, voxel size, order, vox_to_ras)."""
    grid = key_map.grid
    hdr = make_header(grid.dim, grid.voxel_size, grid.voxel_order, grid.affine, n_count)
    hdr["image_orientation_patient"] = trk.header["image_orientation_patient"]
    return hdr


def write_key_trk(trk: Trk, key_map: KeyMap, path) -> None:
    """Write the streamlines of ``trk`` in the key grid's voxmm to ``path`` (atomically)."""
    sign = key_map.mm_sign.astype(np.float32)
    shift = key_map.mm_shift.astype(np.float32)
    hdr = key_grid_header(trk, key_map, trk.n_streamlines)
    with atomic_open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        for _, pts, lengths in trk.iter_chunks():
            m = lengths.shape[0]
            out = np.empty(m + 3 * pts.shape[0], dtype="<f4")
            local_off = np.zeros(m, dtype=np.int64)
            if m > 1:
                np.cumsum(lengths[:-1], out=local_off[1:])
            count_pos = local_off * 3 + np.arange(m)
            mask = np.ones(out.shape[0], dtype=bool)
            mask[count_pos] = False
            moved = pts * sign
            moved += shift
            out[mask] = moved.ravel()
            out.view("<i4")[count_pos] = lengths
            fh.write(out.tobytes())


def make_header(dim, voxel_size, voxel_order, vox_to_ras, n_count) -> np.ndarray:
    """A TrackVis v2 header (little-endian) for a grid."""
    hdr = np.zeros((), dtype=header_2_dtype.newbyteorder("<"))
    hdr["magic_number"] = b"TRACK"
    hdr["dimensions"] = dim
    hdr["voxel_sizes"] = voxel_size
    hdr["voxel_to_rasmm"] = vox_to_ras
    hdr["voxel_order"] = voxel_order.encode()
    hdr["nb_streamlines"] = n_count
    hdr["version"] = 2
    hdr["hdr_size"] = 1000
    return hdr


def write_trk(path, streamlines, dim, voxel_size, voxel_order, vox_to_ras) -> None:
    """Write streamlines given in TrackVis voxmm, stored exactly as given (float32)."""
    hdr = make_header(dim, voxel_size, voxel_order, vox_to_ras, len(streamlines))
    with atomic_open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        for sl in streamlines:
            pts = np.asarray(sl, dtype="<f4").reshape(-1, 3)
            fh.write(np.int32(pts.shape[0]).astype("<i4").tobytes())
            fh.write(pts.tobytes())
