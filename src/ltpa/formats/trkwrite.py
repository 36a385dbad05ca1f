"""Writing .trk files: headers, record bodies, and the key-grid .trk (chunked, straight from the
mapped input)."""

from __future__ import annotations

import numpy as np

from ..io import atomic_open
from .grids import KeyMap
from .trk import header_dtype, not_finite


def key_grid_header(trk, key_map: KeyMap, n_count: int) -> np.ndarray:
    """A TrackVis v2 header for the key grid (dim, voxel size, order, vox_to_ras)."""
    grid = key_map.grid
    hdr = make_header(grid.dim, grid.voxel_size, grid.voxel_order, grid.affine, n_count)
    hdr["image_orientation_patient"] = trk.header["image_orientation_patient"]
    return hdr


def write_key_trk(trk, key_map: KeyMap, path, before_rename=None) -> int:
    """Write the streamlines of an open ``TrkFile`` in the key grid's voxmm to ``path``.

    One read of the file: each range goes through the compiled ``kernels.export_range``
    (``[n, x y z ...]`` records, float32 ``v * sign + shift``) into one reused buffer.
    The header's n_count is written last, once the count is known. Returns the count.
    """
    # numba (~0.45 s to import) only when a file is read: the dry run and
    # `ltpa status` import this module without it
    from ..kernels import KeyShift, export_range

    shift = KeyShift(key_map.mm_sign.astype(np.float32), key_map.mm_shift.astype(np.float32))
    state = {"buf": np.empty(0, dtype=np.float32)}
    with atomic_open(path, "wb", before_rename=before_rename) as fh:
        fh.write(key_grid_header(trk, key_map, 0).tobytes())

        def export_one(r):
            need = r.n + 3 * int(r.counts.sum())
            if state["buf"].shape[0] < need:
                state["buf"] = np.empty(need, dtype=np.float32)
            buf = state["buf"]
            w = export_range(r.words, r.starts, r.counts, r.n, trk.stride, shift, buf,
                             buf.view(np.int32))
            if w < 0:
                raise not_finite(trk.path, r.s0 - 1 - w)
            out = buf[:w]
            if not np.little_endian:
                out = out.byteswap()
            fh.write(memoryview(out).cast("B"))

        walked = trk.walk(export_one)
        fh.seek(0)
        fh.write(key_grid_header(trk, key_map, walked.n_streamlines).tobytes())
    return walked.n_streamlines


def make_header(dim, voxel_size, voxel_order, vox_to_ras, n_count) -> np.ndarray:
    """A TrackVis v2 header (little-endian) for a grid."""
    hdr = np.zeros((), dtype=header_dtype().newbyteorder("<"))
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


def records(points, counts) -> np.ndarray:
    """The TrackVis body (little-endian float32 words) of streamlines given as one flat (P, 3)
    array of points and their counts: per streamline its int32 count, then x y z per point."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.shape[0]
    body = np.empty(n + 3 * int(counts.sum()), dtype="<f4")
    rec = np.arange(n, dtype=np.int64) + 3 * (np.cumsum(counts) - counts)  # each count's word
    body.view("<i4")[rec] = counts.astype("<i4")
    is_point = np.ones(body.shape[0], dtype=bool)
    is_point[rec] = False
    body[is_point] = np.asarray(points, dtype=np.float32).reshape(-1)
    return body


def subset_header(header, n_count: int) -> np.ndarray:
    """A copy of a TrackVis header for ``n_count`` streamlines without scalars or properties."""
    hdr = np.asarray(header).astype(header_dtype().newbyteorder("<")).copy()
    hdr["nb_streamlines"] = n_count
    hdr["nb_scalars_per_point"] = 0
    hdr["nb_properties_per_streamline"] = 0
    hdr["scalar_name"] = b""
    hdr["property_name"] = b""
    hdr["hdr_size"] = 1000
    return hdr
