"""The voxels of a query: a list of (i, j, k) or a mask (file, image or array), checked against
the scan's key grid."""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..formats.grids import Grid, conform, conform_plan


@dataclass(frozen=True)
class KeyGrid:
    """A scan's key grid: shape, voxel size and (when the header has one) affine."""

    dim: tuple
    voxel_size: tuple
    affine: np.ndarray | None  # voxel centre -> RAS mm, None when the header has none

    def order(self) -> str:
        """The voxel order of the grid's axes (e.g. 'RAS', 'LPS'); '?' without an affine.

        Returns
        -------
        str
            The axis codes of the affine (``nibabel.aff2axcodes``) joined, or ``"?"`` when
            ``affine`` is None.
        """
        if self.affine is None:
            return "?"
        return "".join(nib.aff2axcodes(self.affine))

    def affine_key(self):
        """The affine as a hashable tuple of its 16 values rounded to 6 decimals, or None
        without one (part of the key under which a ROI is placed once per grid).

        Returns
        -------
        tuple of float or None
            The 16 values of the 4x4 affine in row order, rounded to 6 decimals; None when
            ``affine`` is None.
        """
        return None if self.affine is None else tuple(np.round(self.affine, 6).ravel().tolist())

    def text(self) -> str:
        """The grid in words, for messages: shape, voxel size in mm and the affine's first
        three rows (or "no affine").

        Returns
        -------
        str
            E.g. ``"91x109x91, voxel 2x2x2 mm, affine [[-2, 0, 0, 90], ...]"`` (values to 6
            significant digits).
        """
        vs = "x".join(f"{v:g}" for v in self.voxel_size)
        aff = "no affine" if self.affine is None else "affine [" + ", ".join(
            "[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in self.affine[:3]) + "]"
        return f"{'x'.join(map(str, self.dim))}, voxel {vs} mm, {aff}"


def key_grid(ds) -> KeyGrid:
    """The key grid of a ``TrackDataset``, from its header.

    Parameters
    ----------
    ds : ltpa.dataset.TrackDataset
        The scan's dataset: the shape is its index's ``dim``, the voxel size and affine its
        header's ``voxel_sizes`` and ``voxel_to_rasmm``.

    Returns
    -------
    KeyGrid
        With ``dim`` and ``voxel_size`` as tuples of 3 ints / floats, and the affine as a
        (4, 4) float64 array, or None when its 3x3 part is all zeros (no affine in the
        header).
    """
    hdr = ds.header
    aff = np.asarray(hdr["voxel_to_rasmm"], dtype=np.float64).reshape(4, 4)
    return KeyGrid(tuple(int(d) for d in ds.tracks_at_ijk.dim),
                   tuple(float(v) for v in np.asarray(hdr["voxel_sizes"]).reshape(3)),
                   None if not aff[:3, :3].any() else aff)


class Roi:
    """The voxels of a query: a list of voxels, a mask (with its grid, placed on each scan's
    key grid) or points in mm (placed by each key grid's affine)."""

    def __init__(self, voxels, mask_source=None, shape=None, affine=None, zooms=None,
                 data=None, points=None):
        self.voxels = voxels  # (N, 3) int64: the list, or the mask's nonzero voxels
        self.mask_source = mask_source
        self.shape = shape
        self.affine = affine
        self.zooms = zooms
        self.data = data  # the mask itself (reoriented per key grid)
        self.points = points  # (N, 3) float RAS mm
        self._placed = {}

    @property
    def kind(self) -> str:
        """``"mm"`` (points), ``"mask"`` or ``"voxels"``: how the ROI was given."""
        if self.points is not None:
            return "mm"
        return "mask" if self.mask_source is not None else "voxels"

    @classmethod
    def from_input(cls, ijks):
        """The ROI of a voxel query's input.

        Parameters
        ----------
        ijks : str, os.PathLike, image, numpy.ndarray or array_like
            A mask: a NIfTI file (path), an image (an object with ``dataobj`` and
            ``affine``, e.g. nibabel's) or a 3-D numpy array in the key grid; its nonzero
            (and, for floats, finite) voxels are the ROI. Else key-grid voxels: one (i, j, k)
            or an (N, 3) array of integers (floats only when whole numbers).

        Returns
        -------
        Roi
            Not yet checked against any key grid (``voxels_on`` does that).

        Raises
        ------
        InputError
            If a mask file does not exist or cannot be read, a mask is not 3-D or not
            numeric, or voxels are not (i, j, k) triples of integers.
        """
        if isinstance(ijks, (str, os.PathLike)):
            return cls._from_image(os.fspath(ijks), os.fspath(ijks))
        if hasattr(ijks, "dataobj") and hasattr(ijks, "affine"):
            return cls._from_image(ijks, "the mask image")
        if isinstance(ijks, np.ndarray) and ijks.ndim == 3:
            return cls(_mask_voxels(ijks, "the mask array"), "the mask array", ijks.shape)
        return cls(_voxel_array(ijks))

    @classmethod
    def from_mm(cls, points):
        """The ROI of points in RAS mm, each placed on a key grid at the voxel whose centre
        is nearest (by the grid's affine, when the ROI is placed).

        Parameters
        ----------
        points : array_like
            One point (x, y, z) or an (N, 3) array of them, in mm.

        Returns
        -------
        Roi
            With ``points`` as an (N, 3) float64 array.

        Raises
        ------
        InputError
            If the points are not numbers, not (x, y, z) triples, or not finite.
        """
        try:
            arr = np.asarray(points, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise InputError(f"query points must be (x, y, z) triples in mm ({exc})") from None
        if arr.ndim == 1 and arr.shape[0] == 3:
            arr = arr.reshape(1, 3)
        if arr.size == 0:
            arr = np.zeros((0, 3))
        if arr.ndim != 2 or arr.shape[1] != 3 or not np.isfinite(arr).all():
            raise InputError(f"query points must be finite (x, y, z) triples in mm; got an "
                             f"array of shape {arr.shape}")
        return cls(np.zeros((0, 3), np.int64), points=arr)

    @classmethod
    def _from_image(cls, img, what):
        if isinstance(img, str):
            if not os.path.exists(img):
                raise InputError(f"mask file {img!r} does not exist")
            try:
                img = nib.load(img)
            except Exception as exc:  # nibabel raises many types for a bad file
                raise InputError(f"mask file {what!r} could not be read as an image ({exc})") \
                    from None
            label = f"mask file {what!r}"
        else:
            label = what
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:
            raise InputError(f"{label} could not be read ({exc})") from None
        if data.ndim != 3:
            raise InputError(f"{label} has {data.ndim} dimensions {data.shape}; expected a 3-D "
                             f"mask in the key grid")
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        return cls(_mask_voxels(data, label), label, tuple(data.shape),
                   np.asarray(img.affine, dtype=np.float64), zooms, data=data)

    def voxels_on(self, grid: KeyGrid):
        """(voxels of the ROI on ``grid``, None), or (None, why it does not fit).

        Voxels must lie inside the grid; points in mm are placed at the nearest voxel
        centre by the grid's affine (none: they do not fit) and must then lie inside it; a
        mask must be on the grid: with both affines, up to axis flips and permutations
        (reoriented by index, ``ltpa.formats.grids.conform_plan``), else the same shape
        (and, for an image, voxel size). The answer is kept per grid (shape, affine, voxel
        size).

        Parameters
        ----------
        grid : KeyGrid
            A scan's key grid.

        Returns
        -------
        voxels : numpy.ndarray or None
            (N, 3) int64 key-grid voxels of the ROI (N may be 0); None when it does not fit.
        problem : str or None
            None when it fits; else why not, in words, for a message.
        """
        key = (grid.dim, grid.affine_key(), grid.voxel_size)
        if key not in self._placed:
            self._placed[key] = self._place(grid)
        return self._placed[key]

    def _place(self, grid: KeyGrid):
        if self.points is not None:
            if grid.affine is None:
                return None, ("the pkl's header gives no affine, so points in mm cannot be "
                              "placed on its key grid; query by voxel")
            ijk = nib_apply(np.linalg.inv(grid.affine), self.points)
            voxels = np.rint(ijk).astype(np.int64)
            return self._inside(voxels, grid, "point")
        if self.mask_source is None:
            return self._inside(self.voxels, grid, "voxel")
        if self.affine is None:
            mine = f"shape {'x'.join(map(str, self.shape))}"
        else:
            mine = "grid " + KeyGrid(tuple(self.shape), self.zooms, self.affine).text()
        differs = f"{self.mask_source} is in {mine}; the key grid is {grid.text()}"
        if self.affine is not None and grid.affine is not None:
            plan = conform_plan(self.shape, self.affine, Grid(grid.dim, grid.voxel_size,
                                                              grid.order(), grid.affine))
            if isinstance(plan, str):
                return None, differs + ": resample the mask to the key grid"
            if plan is None:
                return self.voxels, None
            return _mask_voxels(conform(self.data, plan), self.mask_source), None
        if tuple(self.shape) != grid.dim:
            return None, differs + ": resample the mask to the key grid"
        if self.affine is not None and not np.allclose(self.zooms, grid.voxel_size, atol=1e-4):
            return None, differs + (" (the pkl's header gives no affine: shape and voxel "
                                    "size compared)")
        return self.voxels, None

    def check(self, grid: KeyGrid) -> str | None:
        """Why the ROI does not fit ``grid`` (a message), or None.

        Parameters
        ----------
        grid : KeyGrid
            A scan's key grid.

        Returns
        -------
        str or None
            The problem ``voxels_on`` finds; None when the ROI fits.
        """
        return self.voxels_on(grid)[1]

    @staticmethod
    def _inside(v, grid: KeyGrid, what):
        if v.shape[0] == 0:
            return v, None
        bad = np.flatnonzero(((v < 0) | (v >= np.asarray(grid.dim))).any(axis=1))
        if bad.size:
            shown = ", ".join(str(tuple(int(x) for x in v[i])) for i in bad[:3])
            more = f" and {bad.size - 3} more" if bad.size > 3 else ""
            kind = "voxel" if what == "voxel" else "point (as a voxel)"
            return None, (f"{kind}{'s' if bad.size > 1 else ''} {shown}{more} outside the key "
                          f"grid of shape {'x'.join(map(str, grid.dim))}")
        return v, None


def nib_apply(affine, points) -> np.ndarray:
    """``affine`` applied to (N, 3) points.

    Parameters
    ----------
    affine : numpy.ndarray
        A (4, 4) affine (its last row is not used).
    points : numpy.ndarray
        (N, 3) coordinates.

    Returns
    -------
    numpy.ndarray
        (N, 3) float array: ``points @ affine[:3, :3].T + affine[:3, 3]``.
    """
    return points @ affine[:3, :3].T + affine[:3, 3]


def linear(voxels, dim) -> np.ndarray:
    """Sorted unique linear voxel numbers (C order, as the pkl's index).

    Parameters
    ----------
    voxels : numpy.ndarray
        (N, 3) integer voxels (i, j, k), each inside ``dim``.
    dim : tuple of int
        The grid's shape.

    Returns
    -------
    numpy.ndarray
        1-D int64 array of the sorted unique ``(i * dim[1] + j) * dim[2] + k``; empty when
        ``voxels`` is.
    """
    if voxels.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    lin = np.ravel_multi_index(tuple(voxels.T), dim).astype(np.int64)
    return np.unique(lin)


def _voxel_array(ijks) -> np.ndarray:
    try:
        arr = np.asarray(ijks)
    except (ValueError, TypeError) as exc:
        raise InputError(f"query voxels must be (i, j, k) triples of integers ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.ndim == 1 and arr.shape[0] == 3:
        arr = arr.reshape(1, 3)  # one voxel
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"query voxels must be (i, j, k) triples of integers; got an array of "
                        f"shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            row = arr[np.flatnonzero(bad.any(axis=1))[0]]
            raise InputError(f"query voxel {tuple(row.tolist())} is not three integers")
        if np.abs(arr).max() > 2**40:
            raise InputError("query voxels far outside any key grid")
        return arr.astype(np.int64)
    raise InputError(f"query voxels must be (i, j, k) triples of integers; got {arr.dtype} "
                    f"values")


def _mask_voxels(data, label) -> np.ndarray:
    if data.dtype.kind not in "biuf":
        raise InputError(f"{label} has data type {data.dtype}; expected a numeric mask")
    nonzero = data != 0
    if data.dtype.kind == "f":
        nonzero &= np.isfinite(data)
    return np.argwhere(nonzero).astype(np.int64)
