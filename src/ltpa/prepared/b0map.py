"""dsi2's b0 -> QSDR atlas mapping through a DSI Studio .fib.gz (or .map.fib.gz).

The fib file is a gzipped MATLAB v4 file; ``dimension`` is the QSDR grid and
``mx``, ``my``, ``mz`` give, for every QSDR voxel v in Fortran order, the b0 voxel
whose label it takes. The b0 volume is first conformed to the orientation DSI
Studio's NIfTI reader gives its volumes (LPS), as it does: axes swapped where the
affine's dominant column of a world axis is another voxel axis (x<->y, then x<->z,
then y<->z), then x flipped if the affine's [0,0] > 0, y if [1,1] > 0, z if
[2,2] < 0. For a diagonal affine only the flips apply (dsi2's rule); without the
swaps a permuted b0 (a sagittal acquisition) would take wrong labels silently.
Map indices outside the b0 volume are set to 0 on that axis, as dsi2
did, and counted in the log (dsi2 did not count them, and let negative indices
wrap; here they are treated as outside too).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

from ..errors import DamagedFileError, GeometryError, InputError
from ..formats.grids import QSDR_AFFINE
from ..io import atomic_path
from .labels import read_volume

log = logging.getLogger("ltpa")


def read_fib_mapping(path):
    """(dimension, mx, my, mz) from a .fib.gz; raises LtpaError naming the file.

    Parameters
    ----------
    path : str or os.PathLike
        The DSI Studio .fib.gz (or .map.fib.gz): a gzipped MATLAB v4 file.

    Returns
    -------
    dimension : tuple of int
        The QSDR grid's shape (3 values).
    maps : list of numpy.ndarray
        ``[mx, my, mz]``: flat int64 arrays of ``prod(dimension)`` b0 voxel indices, one per
        QSDR voxel in Fortran order.

    Raises
    ------
    InputError
        If the file does not exist.
    DamagedFileError
        If it is not a gzipped MATLAB file scipy can read, or lacks ``dimension``, ``mx``,
        ``my`` or ``mz``.
    GeometryError
        If ``dimension`` is not three values or ``mx``/``my``/``mz`` do not each have
        ``prod(dimension)`` entries.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.exists():
        raise InputError(f"fib file {str(path)!r} does not exist")
    try:
        with gzip.open(path, "rb") as fh:
            mat = loadmat(fh)
    except (OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise DamagedFileError(
            f"fib file {str(path)!r} is not a gzipped MATLAB file ({exc})") from exc
    missing = [k for k in ("dimension", "mx", "my", "mz") if k not in mat]
    if missing:
        raise DamagedFileError(f"fib file {str(path)!r} has no {', '.join(missing)}; expected a "
                        f"QSDR .fib.gz with the dimension, mx, my, mz mapping")
    dim = tuple(int(d) for d in np.asarray(mat["dimension"]).ravel())
    maps = [np.asarray(mat[k]).ravel() for k in ("mx", "my", "mz")]
    n = int(np.prod(dim)) if len(dim) == 3 else -1
    if n < 0 or any(m.shape[0] != n for m in maps):
        raise GeometryError(f"fib file {str(path)!r}: dimension {dim} does not match the "
                        f"length of mx/my/mz ({', '.join(str(m.shape[0]) for m in maps)})")
    return dim, [m.astype(np.int64) for m in maps]


def conform_b0(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Swap and flip the b0 volume to the orientation DSI Studio's mapping assumes.

    The rule is the module docstring's: axes swapped where the affine's dominant column of
    a world axis is another voxel axis, then flips by the signs of the diagonal.

    Parameters
    ----------
    data : numpy.ndarray
        The 3-D b0 volume as stored.
    affine : numpy.ndarray
        Its voxel -> RAS affine (4x4 or 3x3; only the 3x3 part is used; not modified).

    Returns
    -------
    numpy.ndarray
        ``data`` with axes swapped and flipped (a view; same dtype).
    """
    affine = np.array(affine, dtype=np.float64)[:3, :3]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        # world axis i is reached mostly through voxel axis j: swap voxel axes i and j
        other = 3 - i - j
        if abs(affine[j, j]) < abs(affine[i, j]) and abs(affine[other, j]) < abs(affine[i, j]):
            affine[:, [i, j]] = affine[:, [j, i]]
            data = np.swapaxes(data, i, j)
    if affine[0, 0] > 0:
        data = data[::-1, :, :]
    if affine[1, 1] > 0:
        data = data[:, ::-1, :]
    if affine[2, 2] < 0:
        data = data[:, :, ::-1]
    return data


def map_b0_atlas(fib_path, b0_path, out_path, before_rename=None) -> dict:
    """Write the QSDR-space atlas at ``out_path`` from a b0-space atlas and a fib mapping.

    Each QSDR voxel takes the label of the conformed b0 voxel ``(mx, my, mz)`` gives it; an
    index outside the b0 volume on an axis is set to 0 on that axis (counted, logged). The
    image (the b0 atlas's dtype, ``QSDR_AFFINE``) is written to a temp file beside
    ``out_path`` and renamed onto it (``ltpa.io.atomic_path``); its format is chosen by the
    suffix of ``out_path`` (.nii.gz when unknown).

    Parameters
    ----------
    fib_path : str or os.PathLike
        The DSI Studio .fib.gz with the QSDR mapping.
    b0_path : str or os.PathLike
        The atlas in b0 space (a 3-D image nibabel reads).
    out_path : str or os.PathLike
        The QSDR-space atlas to write.
    before_rename : callable, optional
        Called with no arguments after the data is on disk and before the rename; it raises
        to keep the output from replacing ``out_path``.

    Returns
    -------
    dict
        ``"dimension"``: the QSDR shape (list of 3 ints); ``"outside_b0"``: per axis
        ("x", "y", "z") the number of QSDR voxels whose index fell outside the b0 volume;
        ``"n_labels"``: the number of distinct nonzero labels in the result.

    Raises
    ------
    InputError
        If the fib file or the b0 atlas does not exist, or the atlas is unreadable or not
        3-D.
    DamagedFileError
        If the fib file is not a readable mapping (see ``read_fib_mapping``).
    GeometryError
        If the fib file's dimension and mapping lengths disagree.
    LtpaError
        If the output cannot be written (``atomic_path``).
    """
    import nibabel as nib


    dim, (mx, my, mz) = read_fib_mapping(fib_path)
    data, affine = read_volume(b0_path, "b0 atlas")
    data = conform_b0(data, affine)
    outside = {}
    for axis, (name, m) in enumerate(zip("xyz", (mx, my, mz))):
        bad = (m < 0) | (m >= data.shape[axis])
        outside[name] = int(np.count_nonzero(bad))
        if outside[name]:
            m[bad] = 0
            log.warning("%d QSDR voxels map outside the b0 volume along %s (size %d); "
                        "their %s index is set to 0, as dsi2 did", outside[name], name,
                        data.shape[axis], name)
    mapped = data[mx, my, mz].reshape(dim, order="F")
    with atomic_path(out_path, suffix=_image_suffix(out_path), before_rename=before_rename) as tmp:
        nib.Nifti1Image(np.ascontiguousarray(mapped), QSDR_AFFINE).to_filename(str(tmp))
    n_labels = int(np.unique(mapped[mapped != 0]).shape[0])
    log.info("wrote %s: QSDR grid %s, %d labels", out_path, "x".join(map(str, dim)), n_labels)
    return {"dimension": list(dim), "outside_b0": outside, "n_labels": n_labels}


def _image_suffix(path) -> str:
    name = str(path)
    for ext in (".nii.gz", ".nii", ".mgz", ".img.gz", ".img"):
        if name.endswith(ext):
            return ext
    return ".nii.gz"
