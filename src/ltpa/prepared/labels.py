"""Endpoint labeling (dsi2's rule): one connection id per streamline.

For each point, label = atlas[its trk voxel] (background outside the atlas grid).
With fewer than two labeled points the id is 0; otherwise a, b are the first and
last nonzero labels along the streamline and the id is the position of
(min(a, b), max(a, b)) in the enumeration of ``np.triu_indices(R)`` (diagonal
included) over the sorted region list, plus ``start`` (1 by default; 0 as dsi2's
DSI2_CONN_START_AT_0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GeometryError, InputError
from ..formats.grids import conform, conform_plan, describe_plan
from ..formats.trk import not_finite

log = logging.getLogger("ltpa")

MAX_LABEL = 2**63 - 1


@dataclass
class Atlas:
    """A label volume as ``load_atlas`` returns it.

    Attributes
    ----------
    path : pathlib.Path
        The atlas file.
    data : numpy.ndarray
        int64 labels (C-contiguous), in the streamlines' grid when one was given.
    labels : numpy.ndarray
        The sorted unique nonzero labels present.
    note : str or None
        How it was reoriented by index onto the grid, if it was.
    """

    path: Path
    data: np.ndarray  # int64 labels, in the streamlines' grid
    labels: np.ndarray  # sorted unique nonzero labels present
    note: str | None = None  # how it was brought to the grid (a reorientation), if it was


def read_volume(path, what="atlas file") -> tuple[np.ndarray, np.ndarray]:
    """(data as stored, affine) of a 3-D image; LtpaError naming ``what`` and the file when
    it is missing, unreadable or not 3-D.

    Parameters
    ----------
    path : str or os.PathLike
        The image (any format nibabel loads).
    what : str, optional
        What the file is, for messages; default "atlas file".

    Returns
    -------
    data : numpy.ndarray
        The 3-D voxel array as nibabel gives it (``np.asanyarray(img.dataobj)``: the file's
        dtype, or float when the header scales the values).
    affine : numpy.ndarray
        (4, 4) float64 voxel -> RAS mm affine.

    Raises
    ------
    InputError
        If the file does not exist, nibabel cannot read it, or the image is not 3-D.
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist")
    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{what} {str(path)!r} could not be read as an image ({exc})") from exc
    if raw.ndim != 3:
        raise InputError(
            f"{what} {str(path)!r} has {raw.ndim} dimensions {raw.shape}; "
            f"expected a 3-D label volume"
        )
    return raw, affine


def read_label_image(path) -> tuple[np.ndarray, np.ndarray]:
    """(labels as int64, affine) of a 3-D label volume, checked: integral, >= 0, < 2^63.

    Parameters
    ----------
    path : str or os.PathLike
        The atlas file (any image nibabel reads).

    Returns
    -------
    labels : numpy.ndarray
        3-D int64 labels, in the file's own voxel order.
    affine : numpy.ndarray
        (4, 4) float64 voxel -> RAS mm affine.

    Raises
    ------
    InputError
        If the file does not exist, cannot be read as an image, is not 3-D, or holds values
        that are not labels (NaN or infinite, non-integral, negative, above 2^63 - 1, or of
        a data type other than integer, boolean or float).
    """
    raw, affine = read_volume(path)
    return checked_labels(raw, path), affine


def checked_labels(raw, path) -> np.ndarray:
    """The voxels ``raw`` of the atlas ``path`` as int64 labels, checked as
    ``read_label_image`` checks them.

    Parameters
    ----------
    raw : numpy.ndarray
        The volume as stored (``read_volume``).
    path : str or os.PathLike
        The atlas file, for messages.

    Returns
    -------
    numpy.ndarray
        int64 labels, same shape.

    Raises
    ------
    InputError
        If the values are not labels (NaN or infinite, non-integral, negative, above
        2^63 - 1, or of a data type other than integer, boolean or float).
    """
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise InputError(f"atlas file {str(path)!r} contains NaN or infinite values; "
                            f"expected integer labels")
        if not np.array_equal(raw, np.round(raw)):
            bad = raw[raw != np.round(raw)]
            raise InputError(
                f"atlas file {str(path)!r} has non-integral values (e.g. {float(bad[0]):g}); "
                f"expected integer labels"
            )
    elif raw.dtype.kind not in "iub":
        raise InputError(f"atlas file {str(path)!r} has data type {raw.dtype}; expected integer "
                        f"labels")
    if raw.size and raw.dtype.kind in "uf" and raw.max() > MAX_LABEL:
        raise InputError(f"atlas file {str(path)!r} has label {int(raw.max())}, larger than "
                        f"2^63 - 1; expected region labels that fit a 64-bit integer")
    data = np.asarray(raw, dtype=np.int64)
    if data.size and data.min() < 0:
        raise InputError(
            f"atlas file {str(path)!r} has negative labels (min {int(data.min())}); "
            f"expected 0 for background and positive region labels"
        )
    return data


def read_label_volume(path) -> np.ndarray:
    """The labels of a 3-D label volume as stored (``read_label_image`` without the affine).

    Parameters
    ----------
    path : str or os.PathLike
        The atlas file (any image nibabel reads).

    Returns
    -------
    numpy.ndarray
        int64 labels, in the file's own voxel order.

    Raises
    ------
    InputError
        If the file does not exist, cannot be read as an image, is not 3-D, or holds values
        that are not labels (NaN or infinite, non-integral, negative, above 2^63 - 1, or of
        a data type other than integer, boolean or float).
    """
    return read_label_image(path)[0]


def load_atlas(path, grid=None) -> Atlas:
    """A label volume in ``grid`` (an ``ltpa.formats.grids.Grid``): the same grid up to axis flips
    and permutations is reoriented exactly by index (``Atlas.note`` says so); any other grid
    is an error naming both affines. Without ``grid``, the volume as stored.

    Parameters
    ----------
    path : str or os.PathLike
        The atlas file (any image nibabel reads).
    grid : Grid, optional
        The streamlines' grid the atlas must be on (see ``ltpa.formats.grids.conform_plan``).

    Returns
    -------
    Atlas
        The C-contiguous int64 labels (on ``grid`` when given), its sorted unique nonzero
        labels, and a note when it was reoriented (else None).

    Raises
    ------
    InputError
        If the file cannot be read as a label volume (see ``read_label_image``).
    GeometryError
        If ``grid`` is given and the atlas is not on it, even after axis flips and
        permutations.
    """
    path = Path(path)
    data, affine = read_label_image(path)
    note = None
    if grid is not None:
        plan = conform_plan(data.shape, affine, grid)
        if isinstance(plan, str):
            raise GeometryError(f"atlas file {str(path)!r} {plan}")
        if plan is not None:
            data = conform(data, plan)
            note = describe_plan(plan, affine, grid)
    labels = np.unique(data)
    return Atlas(path, np.ascontiguousarray(data), labels[labels != 0], note)


@dataclass
class LabelResult:
    """What ``label_trk`` found: each streamline's connection id, and the counts QC reports.

    Attributes
    ----------
    ids : numpy.ndarray
        int64 (n_streamlines,): the connection id of each streamline (0: fewer than two
        labeled points).
    regions : numpy.ndarray
        int64: the sorted region list the ids are numbered over.
    start : int
        The number of the first connection id (0 or 1).
    unknown_labels : numpy.ndarray
        Atlas labels not in the region list (treated as background).
    n_points_outside : int
        Points outside the atlas grid.
    n_points : int
        Points in the file.
    """

    ids: np.ndarray  # int64 per streamline
    regions: np.ndarray
    start: int
    unknown_labels: np.ndarray  # atlas labels not in the region list (treated as background)
    n_points_outside: int
    n_points: int = 0


def labeling_tables(atlas: Atlas, regions, start: int, voxel_size):
    """What the labeling kernel needs (``kernels.LabelTables``) and the atlas labels it ignores.

    The rank volume (0 = background, r + 1 = position in the sorted region list) is made
    through the atlas's distinct labels, not a table indexed by label value, so labels of
    any size up to 2^63 - 1 cost memory by their number, not their magnitude.

    Parameters
    ----------
    atlas : Atlas
        The label volume, on the streamlines' grid.
    regions : array_like or None
        The region list to number the ids over (made unique and sorted, int64); None: the
        atlas's own nonzero labels.
    start : int
        The id of the first pair (``connection_ids_start_at``): 0 or 1.
    voxel_size : sequence of float
        The trk's voxel sizes in mm (3 values): a point's voxel is ``floor(voxmm / vs)``.

    Returns
    -------
    tables : kernels.LabelTables
        ``vs`` (float64), ``adim`` (int64 atlas shape), ``upper`` (float32 thresholds of
        ``upper_thresholds``), ``rank`` (flat C-order int32 per voxel: 0 for background or
        a label not in the list, else its position in the list + 1), ``n_regions``,
        ``start``.
    regions : numpy.ndarray
        The int64 sorted region list used.
    unknown : numpy.ndarray
        int64 sorted nonzero atlas labels not in the region list (treated as background).

    Raises
    ------
    InputError
        If ``start`` is neither 0 nor 1.
    """
    # numba (~0.45 s to import) only when a file is read: the dry run and
    # `ltpa status` import this module without it
    from ..kernels import LabelTables, upper_thresholds

    if start not in (0, 1):
        raise InputError(f"connection_ids_start_at must be 0 or 1, not {start!r}")
    regions = atlas.labels if regions is None else np.unique(np.asarray(regions, dtype=np.int64))
    uniq = np.concatenate([[0], atlas.labels]).astype(np.int64)  # every value of the atlas
    pos = np.searchsorted(regions, uniq)
    found = (pos < regions.shape[0]) & (regions[np.minimum(pos, regions.shape[0] - 1)] == uniq) \
        if regions.shape[0] else np.zeros(uniq.shape[0], dtype=bool)
    rank_of_uniq = np.where(found & (uniq != 0), pos + 1, 0).astype(np.int32)
    unknown = uniq[(~found) & (uniq != 0)]
    # each voxel's place among the atlas's values (a search in the short list of its labels:
    # cheaper than np.unique's inverse, which sorts every voxel)
    rank = rank_of_uniq[np.searchsorted(uniq, atlas.data.reshape(-1))]
    dim = tuple(int(d) for d in atlas.data.shape)
    tables = LabelTables(vs=np.asarray(voxel_size, dtype=np.float64),
                         adim=np.asarray(dim, dtype=np.int64),
                         upper=upper_thresholds(dim, voxel_size), rank=rank,
                         n_regions=np.int64(regions.shape[0]), start=np.int64(start))
    return tables, regions, unknown


def label_trk(trk, atlas: Atlas, regions=None, start: int = 1, progress=None) -> LabelResult:
    """Connection id per streamline of an open ``TrkFile`` from ``atlas`` (in the trk's grid).

    One read of the file (``TrkFile.walk``); each range goes through the compiled
    ``kernels.label_range`` while it is in cache: every point is checked (finite, inside
    the atlas grid); the label is looked up from the front until the first nonzero one
    and from the back until the last, so no per-point arrays exist.

    Parameters
    ----------
    trk : TrkFile
        The open .trk (read once).
    atlas : Atlas
        The label volume, already on the trk's grid (``load_atlas`` with its grid).
    regions : array_like, optional
        The region list to number the ids over; None: the atlas's own nonzero labels.
    start : int, optional
        The id of the first pair (``connection_ids_start_at``): 0 or 1; default 1.
    progress : callable, optional
        Called as ``progress(words_done, total_words)`` as the file is read.

    Returns
    -------
    LabelResult
        The int64 id of each streamline, the region list, ``start``, the atlas labels not in
        the list, and the number of points outside the atlas grid and in the file.

    Raises
    ------
    InputError
        If ``start`` is neither 0 nor 1.
    DamagedFileError
        If a streamline has a NaN or infinite coordinate, or the body is damaged (see
        ``TrkFile.walk``).
    """
    # numba (~0.45 s to import) only when a file is read: the dry run and
    # `ltpa status` import this module without it
    from ..kernels import label_range

    tables, regions, unknown = labeling_tables(atlas, regions, start, trk.voxel_size)
    n_max = trk.total_words // (1 + trk.n_properties) + 1
    state = {"ids": np.zeros(min(n_max, trk.n_hint) if trk.n_hint > 0 else 1 << 16, np.int64),
             "outside": 0}

    def label_one(r):
        ids = state["ids"]
        if r.s0 + r.n > ids.shape[0]:
            state["ids"] = ids = np.concatenate(
                [ids, np.zeros(max(ids.shape[0], r.n), np.int64)])
        n_out, bad = label_range(r.words, r.starts, r.counts, r.n, trk.stride, tables,
                                 ids[r.s0:r.s0 + r.n])
        if bad >= 0:
            raise not_finite(trk.path, r.s0 + bad)
        state["outside"] += n_out

    walked = trk.walk(label_one, progress=progress)
    ids = state["ids"][:walked.n_streamlines]
    return LabelResult(ids, regions, start, unknown, int(state["outside"]), walked.n_points)
