"""Voxel grids, the three trk spaces and the integer maps from trk voxels to keys.

A point's trk voxel is its voxel in the .trk's own grid, ``floor(voxmm / voxel_size)``.
Every rule here is integer arithmetic on voxel indices, so a point's key voxel is
computed from its trk voxel exactly once, and the
key-grid voxmm coordinates (for display and the exported .trk) are only derived
for viewing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GeometryError, InputError, LtpaError

SPACES = ("qsdr", "mni", "native")

# DSI Studio QSDR 2 mm template grid (voxel order LPS)
QSDR_DIM = (79, 95, 69)
QSDR_VOXEL_SIZE = (2.0, 2.0, 2.0)
QSDR_ORDER = "LPS"
QSDR_AFFINE = np.array(
    [[-2.0, 0, 0, 78], [0, -2.0, 0, 76], [0, 0, 2.0, -50], [0, 0, 0, 1]]
)

# MNI152 2 mm grid (FSL's MNI152_T1_2mm; voxel order LAS)
MNI_DIM = (91, 109, 91)
MNI_VOXEL_SIZE = (2.0, 2.0, 2.0)
MNI_ORDER = "LAS"
MNI_AFFINE = np.array(
    [[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]
)

# QSDR voxel (i, j, k) -> MNI voxel (i + 6, 101 - j, k + 11): the integer map between
# the two affines above. dsi2 used 102 - j (it flipped with dim - j, not dim - 1 - j).
QSDR_TO_MNI_SHIFT = (6, 101, 11)
QSDR_TO_MNI_SHIFT_LEGACY = (6, 102, 11)


@dataclass(frozen=True)
class Grid:
    """A voxel grid as a TrackVis header describes it."""

    dim: tuple
    voxel_size: tuple
    voxel_order: str
    affine: np.ndarray  # voxel (centre) -> RAS mm



QSDR_GRID = Grid(QSDR_DIM, QSDR_VOXEL_SIZE, QSDR_ORDER, QSDR_AFFINE)
MNI_GRID = Grid(MNI_DIM, MNI_VOXEL_SIZE, MNI_ORDER, MNI_AFFINE)


@dataclass(frozen=True)
class KeyMap:
    """key = sign * trk voxel + shift, per axis, into ``grid``.

    ``mm_sign``/``mm_shift`` map trk voxmm to key-grid voxmm for display:
    for a flipped axis with voxel shift c the voxmm shift is voxel_size * (c + 1),
    which sends the inside of trk voxel v to the inside of key voxel c - v.
    """

    sign: tuple
    shift: tuple
    grid: Grid

    @property
    def mm_sign(self):
        """The per-axis sign (+1 or -1) as a float64 array."""
        return np.asarray(self.sign, dtype=np.float64)

    @property
    def mm_shift(self):
        """The per-axis shift in voxmm (see the class docstring) as a float64 array."""
        vs = np.asarray(self.grid.voxel_size, dtype=np.float64)
        sign = np.asarray(self.sign)
        shift = np.asarray(self.shift, dtype=np.float64)
        return np.where(sign > 0, shift * vs, (shift + 1) * vs)

    def apply(self, ijk: np.ndarray) -> np.ndarray:
        """Map an (N, 3) integer array of trk voxels to key voxels (same dtype).

        Parameters
        ----------
        ijk : numpy.ndarray
            (N, 3) integer trk voxel indices; not modified.

        Returns
        -------
        numpy.ndarray
            (N, 3) key voxel indices, same dtype: per axis ``shift - ijk`` where ``sign`` is
            negative, else ``ijk + shift``. A new array.
        """
        out = ijk.copy()
        for ax in range(3):
            if self.sign[ax] < 0:
                np.subtract(self.shift[ax], out[:, ax], out=out[:, ax])
            elif self.shift[ax]:
                out[:, ax] += self.shift[ax]
        return out


def normalize_order(order) -> str:
    """TrackVis voxel_order as an upper-case 3-letter string ('' -> 'LPS', TrackVis's default).

    Parameters
    ----------
    order : str or bytes
        The header's ``voxel_order``; bytes are decoded as latin-1, NULs and spaces at either
        end are stripped.

    Returns
    -------
    str
        The order in upper case, or "LPS" when it is empty. Not checked to be a valid order.
    """
    if isinstance(order, bytes):
        order = order.decode("latin-1")
    order = str(order).strip("\x00 ").upper()
    return order or "LPS"


def _describe(dim, voxel_size, order):
    vs = "x".join(f"{v:g}" for v in voxel_size)
    return f"dim {'x'.join(str(int(d)) for d in dim)}, voxel {vs} mm, order {order}"


def key_map_for(space: str, dim, voxel_size, voxel_order, *, legacy_dsi2_mni_offset=False,
                where: str = "", vox_to_ras=None) -> KeyMap:
    """The trk voxel -> key map for a trk grid declared to be in ``space``.

    Raises LtpaError naming the space and the expected and found grid when the
    header does not match its declared space.

    Parameters
    ----------
    space : str
        The declared trk space: "qsdr", "mni" or "native".
    dim : sequence of int
        The trk header's dimensions (3 values).
    voxel_size : sequence of float
        The trk header's voxel sizes in mm (3 values).
    voxel_order : str or bytes
        The trk header's voxel order (normalized with ``normalize_order``).
    legacy_dsi2_mni_offset : bool, optional
        For "qsdr": use dsi2's QSDR -> MNI shift ``QSDR_TO_MNI_SHIFT_LEGACY`` (j -> 102 - j)
        instead of ``QSDR_TO_MNI_SHIFT`` (j -> 101 - j). Default False.
    where : str, optional
        Context put in front of error messages (e.g. the scan and file); default none.
    vox_to_ras : array_like, optional
        The header's 4x4 ``vox_to_ras``, for "native" (see ``trk_affine``); None or an
        unusable affine gives the diagonal grid of the voxel order.

    Returns
    -------
    KeyMap
        "native": the identity map into the trk's own grid (affine from ``trk_affine``);
        "qsdr": signs (1, -1, 1) and the QSDR -> MNI shift into ``MNI_GRID``; "mni": per axis
        the identity, or a flip ``90 - i`` / ``108 - j`` / ``90 - k`` where the order differs
        from LAS, into ``MNI_GRID``.

    Raises
    ------
    GeometryError
        When ``space`` is unknown; for "native" when the voxel order is not three letters, one
        of each of L/R, A/P and I/S, or ``vox_to_ras`` has an axis along no RAS axis; for
        "qsdr" when the grid is not dim 79x95x69, voxel 2 mm, order LPS; for "mni" when it is
        not dim 91x109x91, voxel 2 mm, order LAS or a flip of it.
    """
    dim = tuple(int(d) for d in dim)
    voxel_size = tuple(float(v) for v in voxel_size)
    order = normalize_order(voxel_order)
    prefix = f"{where}: " if where else ""
    if space == "native":
        if len(order) != 3:
            raise GeometryError(
                f"{prefix}the trk header's voxel_order {order!r} is not three letters; "
                f"expected e.g. 'LAS' or 'LPS'"
            )
        if sorted("LRAPIS".find(c) // 2 for c in order) != [0, 1, 2]:  # one L/R, A/P, I/S
            raise GeometryError(
                f"{prefix}the trk header's voxel_order {order!r} is not a voxel order; "
                f"expected one letter of L/R, one of A/P and one of I/S, e.g. 'LAS' or 'LPS'"
            )
        try:
            affine = trk_affine(dim, voxel_size, order, vox_to_ras)
        except LtpaError as exc:
            raise exc.in_context(where) from None
        return KeyMap((1, 1, 1), (0, 0, 0), Grid(dim, voxel_size, order, affine))
    if space == "qsdr":
        expected = QSDR_GRID
        ok = dim == QSDR_DIM and np.allclose(voxel_size, QSDR_VOXEL_SIZE) and order == QSDR_ORDER
        if not ok:
            raise GeometryError(
                f"{prefix}trk_space 'qsdr' expects DSI Studio's QSDR 2 mm grid "
                f"({_describe(expected.dim, expected.voxel_size, expected.voxel_order)}) "
                f"but the trk header has {_describe(dim, voxel_size, order)}"
            )
        shift = QSDR_TO_MNI_SHIFT_LEGACY if legacy_dsi2_mni_offset else QSDR_TO_MNI_SHIFT
        return KeyMap((1, -1, 1), shift, MNI_GRID)
    if space == "mni":
        ok = dim == MNI_DIM and np.allclose(voxel_size, MNI_VOXEL_SIZE) and len(order) == 3
        ok = ok and order[0] in "LR" and order[1] in "AP" and order[2] in "IS"
        if not ok:
            raise GeometryError(
                f"{prefix}trk_space 'mni' expects the MNI152 2 mm grid "
                f"({_describe(MNI_DIM, MNI_VOXEL_SIZE, 'LAS or a flip of it')}) "
                f"but the trk header has {_describe(dim, voxel_size, order)}"
            )
        sign, shift = [], []
        for ax in range(3):
            if order[ax] == MNI_ORDER[ax]:
                sign.append(1)
                shift.append(0)
            else:  # flipped by index: d - 1 - i
                sign.append(-1)
                shift.append(MNI_DIM[ax] - 1)
        return KeyMap(tuple(sign), tuple(shift), MNI_GRID)
    raise GeometryError(f"{prefix}unknown trk_space {space!r}; expected one of {', '.join(SPACES)}")


def native_affine(dim, voxel_size, order) -> np.ndarray:
    """A voxel -> RAS affine for a trk grid known only by its header (diagonal, by voxel order).

    Parameters
    ----------
    dim : sequence of int
        Grid dimensions (3 values).
    voxel_size : sequence of float
        Voxel sizes in mm (3 values).
    order : str or bytes
        Voxel order (normalized with ``normalize_order``); an axis whose letter is L, P or I
        is flipped (its RAS coordinate decreases with the index).

    Returns
    -------
    numpy.ndarray
        (4, 4) float64 affine: per axis ``+voxel_size`` with offset 0, or for a flipped axis
        ``-voxel_size`` with offset ``(dim - 1) * voxel_size``.
    """
    aff = np.eye(4)
    for ax, letter in enumerate(normalize_order(order)):
        flip = letter in "LPI"  # index grows toward L/P/I: RAS coordinate decreases
        aff[ax, ax] = -voxel_size[ax] if flip else voxel_size[ax]
        aff[ax, 3] = (dim[ax] - 1) * voxel_size[ax] if flip else 0.0
    return aff


def grid_of_affine(dim, affine) -> Grid:
    """The Grid of a NIfTI-style (dim, voxel -> RAS affine): voxel sizes and order from the
    affine.

    Parameters
    ----------
    dim : sequence of int
        The image shape; only its first three values are used.
    affine : array_like
        (4, 4) voxel -> RAS mm affine.

    Returns
    -------
    Grid
        Dimensions as ints, voxel sizes (the norms of the affine's 3x3 columns, mm), voxel
        order from nibabel's ``aff2axcodes``, and the affine as float64.
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    order = normalize_order("".join(nib.orientations.aff2axcodes(affine)))
    return Grid(tuple(int(d) for d in dim[:3]), tuple(float(v) for v in vs), order, affine)


def grid_for(space: str, reference_volume=None) -> Grid:
    """The grid that RAS streamlines (.tck, .trx) are put on for ``space``.

    Parameters
    ----------
    space : str
        The trk space: "qsdr", "mni", or anything else for native.
    reference_volume : str or os.PathLike, optional
        A NIfTI (anything nibabel loads) that defines the grid; required for a native space,
        ignored otherwise.

    Returns
    -------
    Grid
        ``QSDR_GRID`` for "qsdr", ``MNI_GRID`` for "mni", else the grid of the reference
        volume's shape and affine (``grid_of_affine``).

    Raises
    ------
    InputError
        For a native space when ``reference_volume`` is None or cannot be read by nibabel.
    """
    if space == "qsdr":
        return QSDR_GRID
    if space == "mni":
        return MNI_GRID
    if reference_volume is None:
        raise InputError("field 'reference_volume' is required: a .tck/.trx in trk_space 'native' "
                        "carries RAS mm and no grid; give a NIfTI that defines the grid")
    import nibabel as nib

    try:
        img = nib.load(str(reference_volume))
        shape, affine = img.shape, img.affine
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"reference_volume {str(reference_volume)!r} could not be read "
                        f"({exc})") from None
    return grid_of_affine(shape, affine)


# --------------------------------------------------------------------------- geometry

# two affines describe the same grid when every entry of their 3x4 parts agrees this closely
# (mm for translations; NIfTI stores affines as float32, whose rounding is far below this)
AFFINE_TOLERANCE = 1e-3


def _invertible(affine) -> bool:
    """A finite 4x4 affine whose 3x3 part is invertible."""
    if affine is None:
        return False
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        return False
    with np.errstate(all="ignore"):
        return bool(abs(np.linalg.det(a[:3, :3])) > 1e-12)


def _has_orientation(affine) -> bool:
    """Each voxel axis has a nearest RAS axis: nibabel's ``io_orientation`` gives no NaN row
    (it does for an axis sheared or scaled out of all proportion, and nibabel then cannot
    reorient by the affine)."""
    from nibabel.orientations import io_orientation

    with np.errstate(all="ignore"):
        return not np.isnan(io_orientation(np.asarray(affine, dtype=np.float64))).any()


def _usable(affine) -> bool:
    return _invertible(affine) and _has_orientation(affine)


def trk_affine(dim, voxel_size, order, vox_to_ras=None) -> np.ndarray:
    """voxel -> RAS mm of a .trk's own voxel grid (its voxmm / voxel size, in ``order``).

    nibabel's rule (``get_affine_trackvis_to_rasmm``): TrackVis voxmm are in the header's
    ``voxel_order``; when ``vox_to_ras`` is set it maps voxels of *its own* orientation, so
    the voxels are first flipped/permuted by index from ``voxel_order`` to that orientation.
    Without a usable ``vox_to_ras`` the grid is the diagonal one of the voxel order and
    sizes (``native_affine``).

    Parameters
    ----------
    dim : sequence of int
        The trk grid's dimensions (3 values).
    voxel_size : sequence of float
        Voxel sizes in mm (3 values).
    order : str or bytes
        The header's voxel order (normalized with ``normalize_order``).
    vox_to_ras : array_like, optional
        The header's 4x4 ``vox_to_ras``. None, all zeros, non-finite or singular: not used.

    Returns
    -------
    numpy.ndarray
        (4, 4) float64 affine from trk voxel indices (in ``order``) to RAS mm.

    Raises
    ------
    GeometryError
        When ``vox_to_ras`` is invertible but has a voxel axis that points along no RAS axis
        (nibabel's ``io_orientation`` finds none).
    """
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    order = normalize_order(order)
    if not _invertible(vox_to_ras):  # not set (zeros), or nothing a grid can be made of
        return native_affine(dim, voxel_size, order)
    v2r = np.asarray(vox_to_ras, dtype=np.float64)
    if not _has_orientation(v2r):
        raise GeometryError(f"the trk header's vox_to_ras {_fmt_affine(v2r)} has a voxel axis that "
                        f"points along no RAS axis (nibabel's io_orientation finds none), so "
                        f"its voxel order is unknown; expected the voxel -> RAS mm affine of "
                        f"the trk's grid, or all zeros for none")
    own = axcodes2ornt(nib.aff2axcodes(v2r))
    ornt = ornt_transform(axcodes2ornt(tuple(order)), own)
    return v2r @ inv_ornt_aff(ornt, tuple(int(d) for d in dim))


def streamline_grid(space: str, dim, voxel_size, order, vox_to_ras=None) -> Grid:
    """The voxel grid a .trk's points are labeled in (its own voxels), with its RAS affine.

    qsdr: DSI Studio's QSDR 2 mm grid (the header was checked to be it); mni: MNI152 2 mm in
    the header's voxel order (LAS or a flip of it); native: ``trk_affine``.

    Parameters
    ----------
    space : str
        The trk space: "qsdr", "mni", or anything else for native.
    dim : sequence of int
        The trk header's dimensions (used for native only).
    voxel_size : sequence of float
        The trk header's voxel sizes in mm (used for native only).
    order : str or bytes
        The trk header's voxel order (normalized with ``normalize_order``); unused for qsdr.
    vox_to_ras : array_like, optional
        The header's 4x4 ``vox_to_ras`` (used for native only; see ``trk_affine``).

    Returns
    -------
    Grid
        ``QSDR_GRID``; or the MNI152 2 mm grid in ``order`` with ``MNI_AFFINE`` reoriented to
        it; or the native grid (dims, voxel sizes, order, ``trk_affine``).

    Raises
    ------
    GeometryError
        From ``trk_affine``: for native when ``vox_to_ras`` has a voxel axis along no RAS
        axis.
    """
    order = normalize_order(order)
    dim = tuple(int(d) for d in dim)
    if space == "qsdr":
        return QSDR_GRID
    if space == "mni":
        return Grid(MNI_DIM, MNI_VOXEL_SIZE, order, trk_affine(MNI_DIM, MNI_VOXEL_SIZE, order,
                                                                MNI_AFFINE))
    return Grid(dim, tuple(float(v) for v in voxel_size), order,
                trk_affine(dim, voxel_size, order, vox_to_ras))


def _fmt_affine(a) -> str:
    return "[" + "; ".join(" ".join(f"{v:g}" for v in row) for row in np.asarray(a)[:3]) + "]"


def conform_plan(shape, affine, grid: Grid):
    """How an image (shape, affine) becomes ``grid`` by index: None (it is the grid already),
    a nibabel orientation transform (axis flips/permutations), or an error text.

    Two affines agree when every entry of their 3x4 parts is within ``AFFINE_TOLERANCE``
    (mm).

    Parameters
    ----------
    shape : sequence of int
        The image's shape; only its first three values are used.
    affine : array_like
        The image's (4, 4) voxel -> RAS mm affine.
    grid : Grid
        The target grid (the streamlines' grid).

    Returns
    -------
    None or numpy.ndarray or str
        None when the image is on ``grid`` already; a (3, 2) nibabel orientation transform
        (for ``conform``) when flipping/permuting its axes by index puts it on ``grid``; else
        a text saying why it does not fit (its shape and affine against the grid's), for the
        caller's error message. Nothing is raised here.
    """
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    shape = tuple(int(d) for d in shape[:3])
    affine = np.asarray(affine, dtype=np.float64)
    target = np.asarray(grid.affine, dtype=np.float64)
    if shape == tuple(grid.dim) and np.allclose(affine[:3], target[:3], rtol=0,
                                                atol=AFFINE_TOLERANCE):
        return None
    why = (f"has shape {shape} and affine {_fmt_affine(affine)}, but the streamlines' grid is "
           f"{tuple(grid.dim)} with affine {_fmt_affine(target)}; expected the same grid, up "
           f"to axis flips and permutations, within {AFFINE_TOLERANCE} mm")
    if not (_usable(affine) and _usable(target)):
        return why
    try:
        ornt = ornt_transform(io_orientation(affine), io_orientation(target))
    except ValueError:  # no one-to-one axis correspondence: not the grid by flips/permutations
        return why
    moved = affine @ inv_ornt_aff(ornt, shape)
    perm = [0, 0, 0]
    for src, (dst, _) in enumerate(ornt):
        perm[int(dst)] = shape[src]
    if tuple(perm) == tuple(grid.dim) and np.allclose(moved[:3], target[:3], rtol=0,
                                                      atol=AFFINE_TOLERANCE):
        return ornt
    return why


def conform(data: np.ndarray, plan) -> np.ndarray:
    """``data`` moved to the grid by ``conform_plan``'s transform (exactly, by index).

    Parameters
    ----------
    data : numpy.ndarray
        The image's voxel array (3-D, or more with extra trailing axes).
    plan : numpy.ndarray or None
        ``conform_plan``'s result when it is not an error text: None or an orientation
        transform.

    Returns
    -------
    numpy.ndarray
        ``data`` itself when ``plan`` is None; else a new C-contiguous array with its axes
        flipped/permuted by nibabel's ``apply_orientation`` (same dtype, no interpolation).
    """
    from nibabel.orientations import apply_orientation

    if plan is None:
        return data
    return np.ascontiguousarray(apply_orientation(data, plan))


def describe_plan(plan, affine, grid: Grid) -> str:
    """Say in words how an image was reoriented by index onto ``grid``.

    Parameters
    ----------
    plan : numpy.ndarray
        The orientation plan that was applied (unused in the text).
    affine : numpy.ndarray
        The image's own 4x4 affine.
    grid : Grid
        The grid it was reoriented onto.

    Returns
    -------
    str
        The axis codes before and after, e.g. "reoriented by index from LAS to RAS ...".
    """
    import nibabel as nib

    return (f"reoriented by index from {''.join(nib.aff2axcodes(affine))} to "
            f"{''.join(nib.aff2axcodes(grid.affine))} (the same grid, other voxel order)")
