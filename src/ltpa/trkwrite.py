"""Writing a .trk in the key grid (chunked, straight from the mapped input)."""

from __future__ import annotations

import numpy as np
from nibabel.streamlines.trk import header_2_dtype

from .errors import LtpaError
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
    """Write the streamlines of ``trk`` in the key grid's voxmm to ``path`` (atomically).

    A compiled loop (``ltpa.kernels.export_chunk``) moves each range of streamlines
    into one reused output buffer (``[n, x y z ...]`` records, float32
    ``v * sign + shift``); the mapped input pages are released behind it.
    """
    from .kernels import export_chunk

    sign = key_map.mm_sign.astype(np.float32)
    shift = key_map.mm_shift.astype(np.float32)
    hdr = key_grid_header(trk, key_map, trk.n_streamlines)
    words = trk.native_words()
    buf = None
    with atomic_open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        for s0, s1 in trk.ranges():
            need = (s1 - s0) + 3 * int(trk.counts[s0:s1].sum())
            if buf is None or buf.shape[0] < need:
                buf = np.empty(need, dtype=np.float32)
            w = export_chunk(words, trk.starts, trk.counts, s0, s1, trk.stride, sign, shift,
                             buf, buf.view(np.int32))
            if w < 0:
                raise LtpaError(
                    f"file {str(trk.path)!r}: streamline {-1 - w} has a NaN or infinite "
                    f"coordinate; expected finite voxmm coordinates"
                )
            out = buf[:w]
            if not np.little_endian:
                out = out.byteswap()
            fh.write(memoryview(out).cast("B"))


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
