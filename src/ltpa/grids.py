"""Voxel grids, the three trk spaces and the integer maps from native voxels to keys.

Every rule here is integer arithmetic on voxel indices, so a point's key voxel is
computed from its native voxel ``floor(voxmm / voxel_size)`` exactly once, and the
key-grid voxmm coordinates (for display and the exported .trk) are only derived
for viewing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LtpaError

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

# native QSDR (i, j, k) -> MNI (i + 6, 101 - j, k + 11): the integer map between
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
    """key = sign * native + shift, per axis, into ``grid``.

    ``mm_sign``/``mm_shift`` map native voxmm to key-grid voxmm for display:
    for a flipped axis with voxel shift c the voxmm shift is voxel_size * (c + 1),
    which sends the inside of native voxel v to the inside of key voxel c - v.
    """

    sign: tuple
    shift: tuple
    grid: Grid

    @property
    def mm_sign(self):
        return np.asarray(self.sign, dtype=np.float64)

    @property
    def mm_shift(self):
        vs = np.asarray(self.grid.voxel_size, dtype=np.float64)
        sign = np.asarray(self.sign)
        shift = np.asarray(self.shift, dtype=np.float64)
        return np.where(sign > 0, shift * vs, (shift + 1) * vs)

    def apply(self, native_ijk: np.ndarray) -> np.ndarray:
        """Map an (N, 3) integer array of native voxels to key voxels (same dtype)."""
        out = native_ijk.copy()
        for ax in range(3):
            if self.sign[ax] < 0:
                np.subtract(self.shift[ax], out[:, ax], out=out[:, ax])
            elif self.shift[ax]:
                out[:, ax] += self.shift[ax]
        return out


def normalize_order(order) -> str:
    """TrackVis voxel_order as an upper-case 3-letter string ('' -> 'LPS', TrackVis's default)."""
    if isinstance(order, bytes):
        order = order.decode("latin-1")
    order = str(order).strip("\x00 ").upper()
    return order or "LPS"


def _describe(dim, voxel_size, order):
    vs = "x".join(f"{v:g}" for v in voxel_size)
    return f"dim {'x'.join(str(int(d)) for d in dim)}, voxel {vs} mm, order {order}"


def key_map_for(space: str, dim, voxel_size, voxel_order, *, legacy_dsi2_mni_offset=False,
                where: str = "") -> KeyMap:
    """The native -> key map for a trk grid declared to be in ``space``.

    Raises LtpaError naming the space and the expected and found grid when the
    header does not match its declared space.
    """
    dim = tuple(int(d) for d in dim)
    voxel_size = tuple(float(v) for v in voxel_size)
    order = normalize_order(voxel_order)
    prefix = f"{where}: " if where else ""
    if space == "native":
        if len(order) != 3:
            raise LtpaError(
                f"{prefix}the trk header's voxel_order {order!r} is not three letters; "
                f"expected e.g. 'LAS' or 'LPS'"
            )
        affine = native_affine(dim, voxel_size, order)
        return KeyMap((1, 1, 1), (0, 0, 0), Grid(dim, voxel_size, order, affine))
    if space == "qsdr":
        expected = QSDR_GRID
        ok = dim == QSDR_DIM and np.allclose(voxel_size, QSDR_VOXEL_SIZE) and order == QSDR_ORDER
        if not ok:
            raise LtpaError(
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
            raise LtpaError(
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
    raise LtpaError(f"{prefix}unknown trk_space {space!r}; expected one of {', '.join(SPACES)}")


def native_affine(dim, voxel_size, order) -> np.ndarray:
    """A voxel -> RAS affine for a trk grid known only by its header (diagonal, by voxel order)."""
    aff = np.eye(4)
    for ax, letter in enumerate(normalize_order(order)):
        flip = letter in "LPI"  # index grows toward L/P/I: RAS coordinate decreases
        aff[ax, ax] = -voxel_size[ax] if flip else voxel_size[ax]
        aff[ax, 3] = (dim[ax] - 1) * voxel_size[ax] if flip else 0.0
    return aff


def grid_of_affine(dim, affine) -> Grid:
    """The Grid of a NIfTI-style (dim, voxel -> RAS affine): voxel sizes and order from the affine."""
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    order = normalize_order("".join(nib.orientations.aff2axcodes(affine)))
    return Grid(tuple(int(d) for d in dim[:3]), tuple(float(v) for v in vs), order, affine)


def grid_for(space: str, reference_volume=None) -> Grid:
    """The grid that RAS streamlines (.tck, .trx) are put on for ``space``."""
    if space == "qsdr":
        return QSDR_GRID
    if space == "mni":
        return MNI_GRID
    if reference_volume is None:
        raise LtpaError("field 'reference_volume' is required: a .tck/.trx in trk_space 'native' "
                        "carries RAS mm and no grid; give a NIfTI that defines the grid")
    import nibabel as nib

    try:
        img = nib.load(str(reference_volume))
        shape, affine = img.shape, img.affine
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise LtpaError(f"reference_volume {str(reference_volume)!r} could not be read "
                        f"({exc})") from None
    return grid_of_affine(shape, affine)
