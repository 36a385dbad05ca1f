"""Writing .trk files: headers, record bodies, and the key-grid .trk (chunked, straight from the
mapped input)."""

from __future__ import annotations

import numpy as np

from ..io import atomic_open
from .grids import KeyMap
from .trk import header_dtype, not_finite


def key_grid_header(trk, key_map: KeyMap, n_count: int) -> np.ndarray:
    """A TrackVis v2 header for the key grid (dim, voxel size, order, vox_to_ras).

    Parameters
    ----------
    trk : TrkFile or Trk
        The source .trk; only its ``image_orientation_patient`` is copied.
    key_map : KeyMap
        The trk voxel -> key map; its ``grid`` gives the header's grid.
    n_count : int
        The header's ``nb_streamlines``.

    Returns
    -------
    numpy.ndarray
        0-d little-endian header record (``make_header``) for ``key_map.grid``.
    """
    grid = key_map.grid
    hdr = make_header(grid.dim, grid.voxel_size, grid.voxel_order, grid.affine, n_count)
    hdr["image_orientation_patient"] = trk.header["image_orientation_patient"]
    return hdr


def write_key_trk(trk, key_map: KeyMap, path, before_rename=None) -> int:
    """Write the streamlines of an open ``TrkFile`` in the key grid's voxmm to ``path``.

    One read of the file: each range goes through the compiled ``kernels.export_range``
    (``[n, x y z ...]`` records, float32 ``v * sign + shift``) into one reused buffer.
    The header's n_count is written last, once the count is known. Returns the count.

    The file is written to a temp file beside ``path`` and renamed onto it only when
    everything succeeded (``ltpa.io.atomic_open``).

    Parameters
    ----------
    trk : TrkFile
        The open source .trk (read once, with ``walk``).
    key_map : KeyMap
        The trk voxel -> key map; points become ``voxmm * mm_sign + mm_shift`` (float32).
    path : str or os.PathLike
        The output .trk.
    before_rename : callable, optional
        Called with no arguments after the data is on disk and before the rename; it raises
        to keep the output from replacing ``path``.

    Returns
    -------
    int
        The number of streamlines written.

    Raises
    ------
    DamagedFileError
        If a streamline has a NaN or infinite coordinate, or the body is damaged (see
        ``TrkFile.walk``).
    LtpaError
        If the output cannot be written (``atomic_open``).
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
    """A TrackVis v2 header (little-endian) for a grid.

    Parameters
    ----------
    dim : sequence of int
        Grid dimensions (3 values).
    voxel_size : sequence of float
        Voxel sizes in mm (3 values).
    voxel_order : str
        Voxel order, e.g. "LAS" (ASCII).
    vox_to_ras : array_like
        (4, 4) voxel -> RAS mm affine.
    n_count : int
        The header's ``nb_streamlines``.

    Returns
    -------
    numpy.ndarray
        0-d record of ``header_dtype()`` in little-endian order: magic "TRACK", version 2,
        ``hdr_size`` 1000, no scalars or properties, every other field zero.
    """
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
    """Write streamlines given in TrackVis voxmm, stored exactly as given (float32).

    Written to a temp file beside ``path`` and renamed onto it (``ltpa.io.atomic_open``).

    Parameters
    ----------
    path : str or os.PathLike
        The output .trk.
    streamlines : sequence of array_like
        Each streamline's points, (n, 3) voxmm (anything reshapeable to it), stored as
        little-endian float32.
    dim : sequence of int
        Grid dimensions (3 values) for the header.
    voxel_size : sequence of float
        Voxel sizes in mm (3 values).
    voxel_order : str
        Voxel order, e.g. "LAS".
    vox_to_ras : array_like
        (4, 4) voxel -> RAS mm affine for the header.

    Raises
    ------
    LtpaError
        If the output cannot be written (``atomic_open``).
    """
    hdr = make_header(dim, voxel_size, voxel_order, vox_to_ras, len(streamlines))
    with atomic_open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        for sl in streamlines:
            pts = np.asarray(sl, dtype="<f4").reshape(-1, 3)
            fh.write(np.int32(pts.shape[0]).astype("<i4").tobytes())
            fh.write(pts.tobytes())


def records(points, counts) -> np.ndarray:
    """The TrackVis body (little-endian float32 words) of streamlines given as one flat (P, 3)
    array of points and their counts: per streamline its int32 count, then x y z per point.

    Parameters
    ----------
    points : array_like
        (P, 3) coordinates of all streamlines one after another (cast to float32).
    counts : array_like
        Points per streamline; must sum to P.

    Returns
    -------
    numpy.ndarray
        1-D little-endian float32 array of ``len(counts) + 3 * P`` words; each count word
        holds the int32 bit pattern of the count.
    """
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
    """A copy of a TrackVis header for ``n_count`` streamlines without scalars or properties.

    Parameters
    ----------
    header : numpy.ndarray
        A TrackVis header record (any byte order); not modified.
    n_count : int
        The new ``nb_streamlines``.

    Returns
    -------
    numpy.ndarray
        Little-endian copy with ``nb_streamlines`` set, scalar and property counts and names
        cleared and ``hdr_size`` 1000.
    """
    hdr = np.asarray(header).astype(header_dtype().newbyteorder("<")).copy()
    hdr["nb_streamlines"] = n_count
    hdr["nb_scalars_per_point"] = 0
    hdr["nb_properties_per_streamline"] = 0
    hdr["scalar_name"] = b""
    hdr["property_name"] = b""
    hdr["hdr_size"] = 1000
    return hdr
