"""Streamline files other than .trk: .trk.gz, MRtrix .tck, TRX .trx.

Everything downstream works on a TrackVis body in voxmm (``ltpa.trk``), so the
other formats are converted once, chunk by chunk, into a temporary .trk on the
key grid's native grid, and the same kernels run on it:

- ``.trk.gz``: decompressed as is (the stored voxmm values are kept exactly).
- ``.tck`` / ``.trx`` carry RAS mm, not a grid. The grid is QSDR 2 mm for
  ``trk_space: qsdr``, MNI152 2 mm for ``mni``, and the scan's
  ``reference_volume`` (a NIfTI) for ``native``. A RAS point's voxel is the one
  whose centre is nearest: ``ijk = floor(inv(affine) @ ras + 0.5)``. It is stored
  as TrackVis voxmm ``(ijk_continuous + 0.5) * voxel_size``, so the trk rule
  ``floor(voxmm / voxel_size)`` gives exactly that voxel, except for points within
  float32 rounding of a voxel face, where either neighbour may be chosen.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .errors import LtpaError
from .grids import MNI_AFFINE, MNI_DIM, QSDR_AFFINE, QSDR_DIM, normalize_order
from .trkwrite import make_header

CHUNK_POINTS = 4_000_000
SUFFIXES = (".trk", ".trk.gz", ".tck", ".trx")


def kind_of(path) -> str:
    name = str(path).lower()
    for suffix in (".trk.gz", ".trk", ".tck", ".trx"):
        if name.endswith(suffix):
            return suffix
    raise LtpaError(f"file {str(path)!r}: unknown streamline format; expected one of "
                    f"{', '.join(SUFFIXES)}")


def grid_for(space, reference_volume=None, context=""):
    """(dim, affine) of the voxel grid RAS streamlines are put on."""
    pre = f"{context}: " if context else ""
    if space == "qsdr":
        return QSDR_DIM, QSDR_AFFINE
    if space == "mni":
        return MNI_DIM, MNI_AFFINE
    if reference_volume is None:
        raise LtpaError(f"{pre}field 'reference_volume' is required: a .tck/.trx in trk_space "
                        f"'native' carries RAS mm and no grid; give a NIfTI that defines the grid")
    import nibabel as nib

    try:
        img = nib.load(str(reference_volume))
    except Exception as exc:
        raise LtpaError(f"{pre}reference_volume {str(reference_volume)!r} could not be read "
                        f"({exc})") from exc
    return tuple(int(d) for d in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def _grid_header(dim, affine):
    """Voxel sizes and order of an affine (for the temporary .trk's header)."""
    import nibabel as nib

    vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    order = "".join(nib.orientations.aff2axcodes(affine))
    return tuple(float(v) for v in vs), normalize_order(order)


@contextlib.contextmanager
def as_trk(path, space="qsdr", reference_volume=None, context="", tmpdir=None):
    """Yield the path of a .trk holding the streamlines of ``path`` (itself for a .trk)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == ".trk":
        yield path
        return
    if not path.exists():
        raise LtpaError(f"file {str(path)!r} does not exist")
    folder = tempfile.mkdtemp(prefix="ltpa-", dir=tmpdir)
    tmp = Path(folder) / (path.name + ".trk")
    try:
        if kind == ".trk.gz":
            _gunzip(path, tmp)
        else:
            dim, affine = grid_for(space, reference_volume, context)
            if kind == ".tck":
                chunks, n = _tck_chunks(path)
            else:
                chunks, n = _trx_chunks(path)
            _write_voxmm_trk(tmp, chunks, n, dim, affine)
        yield tmp
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _gunzip(src, dst):
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 16 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise LtpaError(f"file {str(src)!r}: not a readable gzip file ({exc})") from exc


def _write_voxmm_trk(dst, chunks, n_streamlines, dim, affine):
    """Write RAS-mm streamline chunks as a .trk on the grid (dim, affine)."""
    vs, order = _grid_header(dim, affine)
    inv = np.linalg.inv(affine)
    hdr = make_header(dim, vs, order, affine, n_streamlines)
    vs_arr = np.asarray(vs, dtype=np.float64)
    with open(dst, "wb") as fh:
        fh.write(hdr.tobytes())
        for pts, lengths in chunks:
            ijk = pts.astype(np.float64) @ inv[:3, :3].T + inv[:3, 3]
            voxmm = ((ijk + 0.5) * vs_arr).astype("<f4")
            m = lengths.shape[0]
            out = np.empty(m + 3 * voxmm.shape[0], dtype="<f4")
            starts = np.zeros(m, dtype=np.int64)
            if m > 1:
                np.cumsum(lengths[:-1], out=starts[1:])
            count_pos = starts * 3 + np.arange(m)
            mask = np.ones(out.shape[0], dtype=bool)
            mask[count_pos] = False
            out[mask] = voxmm.ravel()
            out.view("<i4")[count_pos] = lengths
            fh.write(out.tobytes())
        fh.flush()
        os.fsync(fh.fileno())


def _tck_header(path):
    with open(path, "rb") as fh:
        head = fh.read(64 << 10)
    if not head.startswith(b"mrtrix tracks"):
        raise LtpaError(f"file {str(path)!r}: not an MRtrix .tck file (no 'mrtrix tracks' line)")
    end = head.find(b"\nEND\n")
    if end < 0:
        raise LtpaError(f"file {str(path)!r}: .tck header has no END line")
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    dtype = fields.get("datatype", "Float32LE")
    if dtype not in ("Float32LE", "Float32BE", "Float64LE", "Float64BE"):
        raise LtpaError(f"file {str(path)!r}: .tck datatype {dtype!r} is not supported")
    try:
        offset = int(fields.get("file", ". 0").split()[1])
    except (IndexError, ValueError):
        raise LtpaError(f"file {str(path)!r}: .tck header has a bad 'file:' field") from None
    np_dtype = {"Float32LE": "<f4", "Float32BE": ">f4", "Float64LE": "<f8", "Float64BE": ">f8"}[dtype]
    return offset, np_dtype, fields


def _tck_chunks(path):
    offset, dtype, _ = _tck_header(path)
    size = os.path.getsize(path)
    itemsize = np.dtype(dtype).itemsize
    n_values = (size - offset) // itemsize
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n_values // 3, 3)) \
        if n_values >= 3 else np.zeros((0, 3), dtype)
    # a NaN triplet ends each streamline, an Inf triplet ends the file
    first = np.asarray(data[:, 0])
    inf = np.flatnonzero(np.isinf(first))
    stop = int(inf[0]) if inf.size else data.shape[0]
    seps = np.flatnonzero(np.isnan(first[:stop]))
    if stop and (not seps.size or seps[-1] != stop - 1):
        raise LtpaError(f"file {str(path)!r}: the last streamline of the .tck is not terminated; "
                        f"the file is truncated")
    starts = np.concatenate([[0], seps[:-1] + 1]) if seps.size else np.zeros(0, np.int64)
    lengths = (seps - starts).astype(np.int64)

    def gen():
        s = 0
        n = lengths.shape[0]
        while s < n:
            total = 0
            e = s
            while e < n and (total + lengths[e] <= CHUNK_POINTS or e == s):
                total += lengths[e]
                e += 1
            lo, hi = int(starts[s]), int(seps[e - 1])
            block = np.asarray(data[lo:hi])
            keep = ~np.isnan(block[:, 0])
            pts = block[keep]
            if not np.isfinite(pts).all():
                raise LtpaError(f"file {str(path)!r}: a streamline has an infinite coordinate")
            yield pts, lengths[s:e]
            s = e

    return gen(), int(lengths.shape[0])


def _trx_chunks(path):
    try:
        from trx.trx_file_memmap import load as trx_load
    except ImportError:
        raise LtpaError(f"file {str(path)!r}: reading .trx needs the trx-python package "
                        f"(pip install trx-python)") from None
    try:
        trx = trx_load(str(path))
    except Exception as exc:
        raise LtpaError(f"file {str(path)!r}: not a readable .trx file ({exc})") from exc
    data = trx.streamlines._data
    offsets = np.asarray(trx.streamlines._offsets, dtype=np.int64)
    lengths = np.asarray(trx.streamlines._lengths, dtype=np.int64)
    n = int(lengths.shape[0])

    def gen():
        try:
            s = 0
            while s < n:
                e = s + 1
                total = int(lengths[s])
                while e < n and total + lengths[e] <= CHUNK_POINTS:
                    total += int(lengths[e])
                    e += 1
                lo = int(offsets[s])
                pts = np.asarray(data[lo:lo + total], dtype=np.float64)
                if not np.isfinite(pts).all():
                    raise LtpaError(f"file {str(path)!r}: a streamline has a NaN or infinite "
                                    f"coordinate")
                yield pts, lengths[s:e]
                s = e
        finally:
            trx.close()

    return gen(), n


def open_streamlines(path, space="qsdr", reference_volume=None, context="", tmpdir=None):
    """Open any supported streamline file as a ``Trk``.

    A converted file lives in a temporary folder that is removed when the
    returned object is garbage-collected (or at exit).
    """
    import weakref

    from .trk import open_trk

    if kind_of(path) == ".trk":
        return open_trk(path)
    cm = as_trk(path, space, reference_volume, context, tmpdir)
    tmp = cm.__enter__()
    try:
        trk = open_trk(tmp)
    except BaseException:
        cm.__exit__(None, None, None)
        raise
    weakref.finalize(trk, cm.__exit__, None, None, None)
    return trk
