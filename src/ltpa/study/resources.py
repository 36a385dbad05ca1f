"""How much memory and time a job may take, from its inputs' headers (the rules' resources).

A bound, not a guess: every term is what the step allocates at most for inputs of that
shape (``tests/test_trust.py`` runs degenerate inputs -- millions of zero-length
streamlines, one giant streamline, only one-point streamlines -- and checks the peak RSS
stays under it; ``make bench`` shows it against real data). Terms (bytes):

- every job: ``BASE_MB`` (Python, numpy, numba and the compiled kernels: ~170 MB measured),
  the record tables of the read buffer (16 MB) and the buffer: 4 MB, grown to the largest
  streamline when one is larger (at most ``ltpa.formats.trk.MAX_RECORD_BYTES``, 64 MB, and at most
  the body);
- index: 20 per key-grid voxel (last id, count, slot), 8 per (voxel, streamline) pair --
  at most one per point, and a point takes at least 12 bytes of the trk -- and 16 per
  streamline (its count twice and its number of pairs);
- label: 8 per streamline (its id) and 40 per atlas voxel (the labels as read and as
  int64, np.unique's inverse, the rank volume);
- export: the output buffer (as large as the read buffer);
- scalars: 48 per streamline (a Python float per line, then the array);
- map_b0: 3 per byte of the decompressed fib (MATLAB's arrays as read, the three maps as
  int64) and 24 per b0 voxel.

The streamline count is the header's ``n_count`` (the reader stops as soon as a file holds
more), or, when it is 0, the most the body can hold (one 4-byte count per streamline).
"""

from __future__ import annotations

import functools
import os
import struct
import zlib

from ..formats.convert import TrxReader, kind_of
from ..formats.grids import MNI_DIM
from ..formats.gz import GZ_MAX_RATIO
from ..formats.trk import BUFFER_WORDS, MAX_RECORD_BYTES, TrkFile
from ..prepared.patterns import sphere_offsets

BASE_MB = 250
TABLE_BYTES = 16 << 20
MIB = 1 << 20


def mem_mb(spec) -> int:
    """Peak memory (MB) the job of ``spec`` (an ``ltpa.study.spec.JobSpec``) may need.

    ``BASE_MB`` plus the step's terms (the module's docstring) from the inputs' headers
    and sizes; an input that does not exist (yet) adds nothing.

    Parameters
    ----------
    spec : ltpa.study.spec.JobSpec
        The job; its step, space and inputs are read.

    Returns
    -------
    int
        The bound in MiB (1 MB = 2**20 bytes), rounded up; at least ``BASE_MB`` + 1 (the
        whole of it for a "qc_scan" job).
    """
    step = spec.step
    extra = 0
    if step in ("index", "export", "label", "scalars"):
        body, n = _streamlines_size(spec.inputs.get("trk_file"))
        buffer = max(4 * BUFFER_WORDS, min(body, MAX_RECORD_BYTES))
        extra = TABLE_BYTES + buffer
        if step == "index":
            extra += 20 * _key_voxels(spec) + 8 * (body // 12) + 16 * n
        elif step == "label":
            extra += 8 * n + 40 * _voxels(spec.inputs.get("volume_path"))
        elif step == "export":
            extra += buffer
        else:
            extra += 48 * n + (os.path.getsize(spec.inputs["txt_path"])
                               if _exists(spec.inputs.get("txt_path")) else 0)
    elif step == "map_b0":
        extra = 3 * _gunzipped_size(spec.inputs.get("fib_file")) + \
            24 * _voxels(spec.inputs.get("b0_volume_path"))
    elif step == "patterns":
        extra = patterns_bytes(spec)
    return int(BASE_MB + extra / MIB + 1)


def patterns_bytes(spec) -> int:
    """Termination patterns: the pkl's pages it reads (at most the file), 2 x the npy (the
    ids as int32 and a last-seen stamp of 8 bytes per streamline, against the npy's 8) and
    ``PATTERNS_WORK_MB`` for the per-voxel tables (lookup, centers, indptr: 20 bytes per
    key voxel, 18 MB in the 2 mm MNI grid) and one chunk of output (32,768 centers; the
    file is streamed chunk by chunk).

    Parameters
    ----------
    spec : ltpa.study.spec.JobSpec
        A "patterns" job; the sizes of its ``pkl_path`` and ``numpy_path`` inputs are read
        (0 for one that does not exist yet).

    Returns
    -------
    int
        The bound in bytes: the pkl's size + 2 x the npy's + ``PATTERNS_WORK_MB`` MiB.
    """
    pkl = _file_size(spec.inputs.get("pkl_path"))
    npy = _file_size(spec.inputs.get("numpy_path"))
    return pkl + 2 * npy + PATTERNS_WORK_MB * MIB


PATTERNS_WORK_MB = 256


def _file_size(path) -> int:
    return os.path.getsize(path) if _exists(path) else 0


def runtime_min(spec) -> int:
    """Minutes the job may take: 5, plus 1 per 250 MB of streamlines (~10x what is measured);
    termination patterns: 5, plus 1 per 250 MB of pkl per sphere voxel.

    Parameters
    ----------
    spec : ltpa.study.spec.JobSpec
        The job; its step, radius and the sizes of its ``trk_file`` (the body the job reads)
        or, for patterns, ``pkl_path`` input are read (0 for one that does not exist).

    Returns
    -------
    int
        The limit in whole minutes, rounded down (MB: 2**20 bytes); at least 5.

    Raises
    ------
    InputError
        If a patterns job's radius is not an integer in 0..``MAX_RADIUS``
        (``ltpa.prepared.patterns.sphere_offsets``).
    """
    if spec.step == "patterns":
        return int(5 + _file_size(spec.inputs.get("pkl_path")) *
                   sphere_offsets(spec.radius).shape[0] / (250 * MIB))
    body, _ = _streamlines_size(spec.inputs.get("trk_file"))
    return int(5 + body / (250 * MIB))


def _exists(path) -> bool:
    return path is not None and os.path.exists(path)


def _streamlines_size(path) -> tuple[int, int]:
    """(bytes of the .trk body the job reads, most streamlines it may hold)."""
    if not _exists(path):
        return 0, 0
    return _size_of(str(path), *_stamp(path))


def _stamp(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=65536)
def _size_of(path, size, mtime_ns) -> tuple[int, int]:
    kind = kind_of(path)
    try:
        if kind == ".trk":
            with TrkFile(path) as f:
                body = f.body_bytes
                most = body // (4 * (1 + f.n_properties)) + 1
                return body, min(f.n_hint, most) if f.n_hint > 0 else most
        if kind == ".trk.gz":
            body = GZ_MAX_RATIO * max(size, MIB)
            return body, body // 4
        if kind == ".tck":
            # the temporary .trk: 12 bytes per point (float32) and 4 per streamline
            points = (size // 12) if "Float32" in _tck_type(path) else size // 24
            return 12 * points, points
        with TrxReader(path) as r:
            return 12 * r.n_vertices + 4 * r.n_streamlines, r.n_streamlines
    except Exception:  # noqa: BLE001 - an unreadable file fails its job with a clear error
        return size, size // 4


def _tck_type(path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("latin-1")
    for line in head.splitlines():
        if line.startswith("datatype:"):
            return line.split(":", 1)[1].strip()
    return "Float32LE"


def _key_voxels(spec) -> int:
    if spec.space in ("qsdr", "mni"):
        return MNI_DIM[0] * MNI_DIM[1] * MNI_DIM[2]
    path = spec.inputs.get("reference_volume") or spec.inputs.get("trk_file")
    if path is not None and str(path).endswith(".trk") and _exists(path):
        try:
            with TrkFile(path) as f:
                d = f.dim
                return d[0] * d[1] * d[2]
        except Exception:  # noqa: BLE001
            return 0
    return _voxels(path)


def _gunzipped_size(path) -> int:
    """A gzip file's decompressed size (its trailer, modulo 4 GiB; at least the file's size)."""
    if not _exists(path):
        return 0
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 4))
            isize = int.from_bytes(fh.read(4), "little")
    except OSError:
        return 4 * size
    return max(isize, size)


def _voxels(path) -> int:
    """Voxels of a NIfTI, from its header (``nifti_shape``; nibabel for any other image)."""
    if not _exists(path):
        return 0
    shape = nifti_shape(path)
    if shape is None:
        try:
            import nibabel as nib

            shape = nib.load(str(path)).shape
        except Exception:  # noqa: BLE001
            return 0
    n = 1
    for d in shape:
        n *= int(d)
    return n


# NIfTI-1 and NIfTI-2 headers: (sizeof_hdr, offset of dim[8], its struct code)
_NIFTI_DIMS = {348: (40, "h"), 540: (16, "q")}


def nifti_shape(path) -> tuple | None:
    """The shape in a ``.nii`` / ``.nii.gz`` header, read from its first bytes.

    What a job's resources need of an atlas, at every job of a dry run: reading only the
    header's ``dim`` (no nibabel image: 1 ms each, a fifth of a 10,000-scan dry run).

    Parameters
    ----------
    path : str or os.PathLike
        The image.

    Returns
    -------
    tuple of int or None
        ``dim[1:dim[0] + 1]`` of a NIfTI-1 or NIfTI-2 header (either byte order); None for
        anything else (another format, a damaged or short header), which the caller reads
        with nibabel.
    """
    name = str(path)
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        with open(name, "rb") as fh:
            raw = fh.read(1 << 14)
        if name.endswith(".gz"):
            raw = zlib.decompressobj(31).decompress(raw, 540)
    except (OSError, zlib.error):
        return None
    for order in "<>":
        if len(raw) < 4:
            return None
        size = struct.unpack(order + "i", raw[:4])[0]
        if size in _NIFTI_DIMS:
            at, code = _NIFTI_DIMS[size]
            if len(raw) < at + 8 * struct.calcsize(code):
                return None
            dim = struct.unpack(f"{order}8{code}", raw[at:at + 8 * struct.calcsize(code)])
            if not 1 <= dim[0] <= 7 or any(d < 0 for d in dim[1:dim[0] + 1]):
                return None
            return tuple(int(d) for d in dim[1:dim[0] + 1])
    return None
