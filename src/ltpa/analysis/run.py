"""``run_ltpa``: a statistic of the termination patterns at every center, as a map.

``function`` is the name of a built-in statistic (``ltpa.analysis.stats``: computed over
blocks of ``block_size`` centers at once, each block read from every scan's memory-mapped
patterns, so memory stays flat as scans grow) or a Python callable taking one
``PatternMatrix`` (dsi2's style: called once per center, the centers split into blocks
run by ``n_jobs`` worker processes, with a progress bar on stderr).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, LtpaError
from ..io import atomic_path
from ..prepared.patterns import check_radius
from .matrix import StudyPatterns, check_across, check_min_tracks
from .roi import KeyGrid, Roi, key_grid, linear
from .stats import STATS, Block, StudyFacts, make_stat

BLOCK_SIZE = 1 << 14  # centers per block at most
# entries (scan x center x connection id) per block at most: a block holds four int64 arrays
# of them (32 bytes an entry) and a statistic a few temporaries the same size, so ~0.5 GB.
# 50 scans of 10^6 streamlines at r = 1 hold ~11,000 entries per center: 16k centers a
# block would be 180 M entries (measured: past 12 GB); this budget gives ~360 centers.
BLOCK_ENTRIES = 4 << 20


class LtpaResult:
    """A map: ``values[n]`` at key-grid voxel ``centers[n]`` = (i, j, k).

    ``maps``: every map the statistic made (name -> (N,) array; ``values`` is
    ``maps[stat]``), e.g. ``p_fwe`` of ``group_difference`` with permutations,
    ``within_subject`` / ``between_subject`` of ``similarity`` with repeat scans; each is
    also an attribute (``result.p_fwe``). ``dim`` / ``affine``: the key grid; ``meta``: what
    was computed (stat, radius, atlas, options, scans).
    """

    def __init__(self, centers, values, *, stat, radius, dim, affine, voxel_size, maps=None,
                 meta=None):
        self.centers = np.asarray(centers, dtype=np.int64).reshape(-1, 3)
        self.values = values
        self.stat = stat
        self.radius = int(radius)
        self.dim = tuple(int(d) for d in dim)
        self.affine = affine
        self.voxel_size = tuple(voxel_size)
        self.maps = dict(maps or {stat: values})
        self.meta = dict(meta or {})

    def __getattr__(self, name):
        maps = self.__dict__.get("maps") or {}
        if name in maps:
            return maps[name]
        if name == "p_fwe":
            return None
        raise AttributeError(f"LtpaResult has no attribute or map {name!r}")

    def __len__(self):
        return int(self.centers.shape[0])

    def __repr__(self):
        return (f"LtpaResult({self.stat!r}, radius {self.radius}, {len(self)} centers, maps "
                f"{', '.join(self.maps)})")

    def volume(self, name=None) -> np.ndarray:
        """The map as a float32 array of the key grid's shape (NaN where not computed).

        Parameters
        ----------
        name : str, optional
            The map's name, one of ``maps``; None (default): the statistic's own
            (``stat``).

        Returns
        -------
        numpy.ndarray
            float32 array of shape ``dim``: the map's value at each of ``centers``, NaN at
            every other voxel.

        Raises
        ------
        InputError
            If there is no map ``name``, or its values are not numbers or not one number per
            center.
        """
        name = self.stat if name is None else name
        if name not in self.maps:
            raise InputError(f"no map {name!r}; this result has {', '.join(self.maps)}")
        values = self.maps[name]
        try:
            values = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"map {name!r} holds values that are not numbers (a function "
                             f"returned {type(values[0]).__name__}s): it cannot be a volume") \
                from None
        if values.ndim != 1:
            raise InputError(f"map {name!r} has {values.ndim}-D values per center; a volume "
                             f"needs one number per center")
        vol = np.full(self.dim, np.nan, dtype=np.float32)
        if len(self):
            vol[tuple(self.centers.T)] = values
        return vol

    def to_nifti(self, name=None):
        """A ``nibabel.Nifti1Image`` of the map in the key grid (its shape and affine).

        Parameters
        ----------
        name : str, optional
            The map's name, one of ``maps``; None (default): the statistic's own.

        Returns
        -------
        nibabel.Nifti1Image
            The float32 ``volume(name)`` with the key grid's affine (float64; without one, a
            diagonal of the voxel sizes), spatial units mm and a description naming the map
            and radius.

        Raises
        ------
        InputError
            As ``volume``: no map ``name``, or its values cannot make a volume.
        """
        import nibabel as nib

        affine = self.affine
        if affine is None:
            affine = np.diag(list(self.voxel_size) + [1.0])
        img = nib.Nifti1Image(self.volume(name), np.asarray(affine, dtype=np.float64))
        img.header.set_xyzt_units("mm")
        img.header["descrip"] = f"ltpa {name or self.stat} r={self.radius}"[:79].encode()
        return img

    def save(self, path, name=None) -> Path:
        """Write the map (``name``, default the statistic's) to ``path`` (.nii or .nii.gz),
        atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The output file; its name must end in .nii or .nii.gz.
        name : str, optional
            The map's name, one of ``maps``; None (default): the statistic's own.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        InputError
            If ``path`` does not end in .nii or .nii.gz, or as ``volume`` (no map ``name``,
            or its values cannot make a volume).
        LtpaError
            If the file cannot be written (``ltpa.io.atomic_path``).
        """
        path = Path(path)
        suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
        if suffix not in (".nii", ".nii.gz"):
            raise InputError(f"output {str(path)!r}: expected a .nii or .nii.gz file name")
        img = self.to_nifti(name)
        with atomic_path(path, suffix=suffix) as tmp:
            img.to_filename(str(tmp))
        return path


# --------------------------------------------------------------------------- centers


def resolve_centers(sp, centers) -> np.ndarray:
    """Linear key-grid numbers of the centers: None = every center of any scan (sorted);
    an (N, 3) array (in its order); or a mask (NIfTI path, nibabel image, or 3-D array) in
    the key grid (its nonzero voxels, sorted).

    Parameters
    ----------
    sp : StudyPatterns or KeyGrid
        The study's patterns, or (to check ``centers`` before any pattern is read) the key
        grid they are in; a ``KeyGrid`` cannot give every center (``centers`` None).
    centers : None, array_like, str, os.PathLike or image
        As ``run_ltpa``'s.

    Returns
    -------
    numpy.ndarray
        (N,) int64 linear key-grid numbers (C order): every center of any scan, sorted,
        for None; the voxels of an array in its order (repeats kept); the nonzero voxels of
        a mask, sorted.

    Raises
    ------
    LtpaError
        If a voxel is outside the key grid, a mask is in another grid, or given centers
        (a mask with no nonzero voxel, an empty array) select no voxel (this last an
        ``InputError``).
    InputError
        If ``centers`` cannot be read (``Roi.from_input``): a mask file that does not exist
        or is not an image, a mask that is not 3-D or not numeric, voxels that are not
        (i, j, k) triples of integers.
    """
    if centers is None:
        return sp.centers()
    grid = sp if isinstance(sp, KeyGrid) else KeyGrid(sp.dim, sp.voxel_size, sp.affine)
    roi = Roi.from_input(centers)
    voxels, problem = roi.voxels_on(grid)
    if problem:
        raise LtpaError(f"centers: {problem}")
    if voxels.shape[0] == 0:
        what = f"{roi.mask_source} has no nonzero voxel" if roi.mask_source is not None \
            else "the array of voxels is empty"
        raise InputError(f"centers: {what}: no center to compute (give None for every center "
                         f"of any scan)")
    if roi.mask_source is not None:
        return linear(voxels, grid.dim)
    return np.ravel_multi_index(tuple(voxels.T), grid.dim).astype(np.int64)


def _grid_key(grid: KeyGrid) -> tuple:
    return tuple(grid.dim), tuple(np.round(grid.voxel_size, 6)), grid.affine_key()


# --------------------------------------------------------------------------- progress


class Progress:
    """``ltpa: <what> 42% (8400/20000 centers)`` on stderr, at most twice a second."""

    def __init__(self, what, total, enabled=True, stream=None):
        self.what, self.total, self.enabled = what, int(total), enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def update(self, n):
        """Count ``n`` more centers done; redraw the bar if enabled, 0.5 s or more since
        the last drawing, and short of the total.

        Parameters
        ----------
        n : int
            Centers done since the last call.
        """
        self.done += int(n)
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5 and self.done < self.total:
            self.last = now
            self._show(now)

    def _show(self, now):
        pct = 100.0 * self.done / max(self.total, 1)
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        self.stream.write(f"\rltpa: {self.what} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{pct:5.1f}% ({self.done}/{self.total} centers, "
                          f"{now - self.t0:.1f} s)")
        self.stream.flush()

    def close(self):
        """Draw the bar a last time and end its line (if enabled)."""
        if self.enabled:
            self._show(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- run_ltpa


def run_ltpa(function, source, radius=0, centers=None, min_tracks=1, n_jobs=1, *,
             across="union", block_size=BLOCK_SIZE, progress=None, **stat) -> LtpaResult:
    """A map of ``function`` over the termination patterns of ``source``'s scans.

    Parameters
    ----------
    function : str or callable
        A built-in statistic's name (``coverage``, ``streamlines``, ``connections``,
        ``similarity``, ``within_subject``, ``between_subject``, ``group_difference``), or
        a function of one ``PatternMatrix`` returning a value (dsi2's style).
    source : TrackDataSource or StudyPatterns
        A ``TrackDataSource`` with its atlas selected (``change_atlas``), or the
        ``termination_patterns(radius)`` of one.
    radius : int
        Sphere radius in voxels, 0..10.
    centers : None, (N, 3) array, or mask
        None: every center of any scan; an (N, 3) array of key-grid voxels; a mask NIfTI
        (path or image) or 3-D array in the key grid. Given centers that select no voxel
        (an all-zero mask, an empty array) are an error.
    min_tracks : int
        >= 1. For a callable, counts below it are dropped from each ``PatternMatrix``
        (dsi2's aggregator option). The built-ins: ``coverage`` and ``connections`` count
        what reaches it, ``similarity`` leaves smaller counts out of the vectors,
        ``group_difference`` tests only centers where enough scans reach it and then uses
        the counts as they are, ``streamlines`` does not apply it.
    n_jobs : int
        Worker processes for a callable (built-ins run vectorized in this process).
    across : "union" or "intersection"
        The columns of each ``PatternMatrix`` handed to a callable; a built-in statistic
        takes only "union" (it reads every scan's counts).
    block_size : int
        Centers per block at most (default ``BLOCK_SIZE``); fewer when a block would hold
        more than ``BLOCK_ENTRIES`` entries, and for a callable at most 2048 and about an
        eighth of each worker's share.
    progress : bool or None
        A progress bar on stderr (None: for a callable only).
    **stat
        The statistic's options: ``group_difference`` takes ``connection`` (an id or a pair
        of region names or numbers), ``groups=(A, B)``, ``min_scans``, ``n_permutations``,
        ``seed``.

    Returns
    -------
    LtpaResult
        ``centers`` (N, 3) int64 key-grid voxels in the order of the centers (sorted when
        computed from every scan or a mask); ``maps``: for a built-in, each of its maps as
        (N,) float64 (NaN where not computed); for a callable, one map named after it
        (``__name__``): its values as a float64 array when they convert to one (``(N,)``
        for numbers), else an (N,) object array. ``meta``: radius, atlas, ``min_tracks``,
        scan_ids, the pattern files read, the statistic and its options (a callable:
        ``across``).

    Raises
    ------
    LtpaError
        Bad input, named: the radius, ``min_tracks``, ``n_jobs``, ``across``, the statistic
        and its options, the centers (outside the key grid, a mask in another grid, none
        selected), the connection, the groups. Everything the study decides is checked
        against it (``StudyFacts``: scans, groups, subjects, atlas; the first scan's key
        grid) before any scan's patterns are read or computed. Also when the study cannot be
        read (no atlas selected, a scan's pkl, npy or pattern file; ``study_patterns``).
    InputError
        The kind of most bad input above; also ``radius`` differing from that of the
        ``StudyPatterns`` passed, options given with a callable, ``across`` other than
        "union" with a built-in statistic, and ``n_jobs`` > 1 without the 'fork' start
        method.
    GeometryError
        If the scans' key grids differ (``study_patterns``).
    DamagedFileError
        If a scan's npy or sidecar is damaged (``study_patterns``).
    StaleOutputError
        If a scan's npy and pkl disagree, or the scans' region lists or numbering bases
        differ (``study_patterns``, ``connection_of``).

    Notes
    -----
    An exception raised by a callable ``function`` propagates as it is.
    """
    check_radius(radius)
    min_tracks = check_min_tracks(min_tracks)
    if not isinstance(n_jobs, (int, np.integer)) or isinstance(n_jobs, bool) or n_jobs < 1:
        raise InputError(f"n_jobs {n_jobs!r}: expected an integer >= 1")
    across = check_across(across)
    named = isinstance(function, str)
    if named:
        _check_name(function, stat)
        if across != "union":
            raise InputError(f"across {across!r}: it chooses the columns of the PatternMatrix "
                             f"handed to a function; the built-in statistic {function!r} "
                             f"reads every scan's counts (leave across='union')")
    elif not callable(function):
        raise InputError(f"function {function!r}: expected a built-in statistic's name or a "
                         f"callable taking a PatternMatrix")
    elif stat:
        raise InputError(f"options {', '.join(map(repr, sorted(stat)))} are for built-in "
                         f"statistics, not for a function")
    # everything the study decides (centers, connection, groups, options) is checked
    # before a scan's patterns are read or computed
    if isinstance(source, StudyPatterns):
        sp = facts = source
        if sp.radius != int(radius):
            raise InputError(f"radius {radius} given, but the patterns passed are of radius "
                             f"{sp.radius}")
        grid = KeyGrid(sp.dim, sp.voxel_size, sp.affine)
    else:
        sp = None
        facts = StudyFacts.of_source(source)
        grid = key_grid(source.dataset(0))
    lin = None if centers is None else resolve_centers(grid, centers)
    st = None
    if named:
        conn_id = None
        if function == "group_difference" and stat.get("connection") is not None:
            conn_id = connection_of(source, facts, stat["connection"])
        st = make_stat(function, facts, min_tracks, stat, connection_id=conn_id)
    if sp is None:
        sp = source.termination_patterns(radius)
        if lin is not None and _grid_key(grid) != _grid_key(
                KeyGrid(sp.dim, sp.voxel_size, sp.affine)):
            lin = resolve_centers(sp, centers)
    if lin is None:
        lin = sp.centers()
    meta = {"radius": sp.radius, "atlas": sp.atlas, "min_tracks": min_tracks,
            "scan_ids": sp.scan_ids, "patterns": sp.sources}
    if named:
        st.bind(sp)
        maps = _run_stat(st, sp, lin, block_size, bool(progress))
        meta.update({"stat": function, "options": st.describe()})
        name = function
    else:
        values = _run_callable(function, sp, lin, int(n_jobs), block_size,
                               progress is None or bool(progress), min_tracks, across)
        name = getattr(function, "__name__", "function")
        maps = {name: values}
        meta.update({"stat": name, "across": across})
    return LtpaResult(sp.ijk(lin), maps[name], stat=name, radius=sp.radius, dim=sp.dim,
                      affine=sp.affine, voxel_size=sp.voxel_size, maps=maps, meta=meta)


def _check_name(name, options=()):
    """An unknown statistic or option is an error before any pattern is read."""
    if name not in STATS:
        raise InputError(f"unknown statistic {name!r}; the built-in ones: {', '.join(STATS)} "
                         f"(or pass a function of a PatternMatrix)")
    allowed = STATS[name].options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"statistic {name!r} takes no option {', '.join(map(repr, unknown))} "
                         f"(its options: {', '.join(allowed) if allowed else 'none'})")


def connection_of(source, sp, connection) -> int:
    """A connection id from an id or a pair of region names / numbers, checked against the
    atlas's numbering (``sp``: the ``StudyPatterns`` or ``StudyFacts``, for ``regions`` and
    ``start``).

    Parameters
    ----------
    source : TrackDataSource or StudyPatterns
        What ``run_ltpa`` was given; a pair of regions needs a ``TrackDataSource``
        (``TrackDataSource.connection_id`` resolves it).
    sp : StudyPatterns or StudyFacts
        Gives ``regions`` (sorted region ids, or None) and ``start`` (the numbering base, or
        None); with both, an id is checked against the atlas's range.
    connection : int, str, tuple or list
        A connection id (an integer, or a whole number or string of digits); a pair of
        regions (names or numbers); or a string ``"a, b"``, taken as that pair.

    Returns
    -------
    int
        The connection id: 0, or in ``start .. start + n_pairs - 1`` when ``regions`` and
        ``start`` are known.

    Raises
    ------
    InputError
        If a pair does not have two items, a pair is given with a ``StudyPatterns``
        source, ``connection`` is not a whole number (a bool is not one), or the id is not
        in the atlas's range; from ``TrackDataSource.connection_id``, if no atlas is
        selected or a region is not found.
    StaleOutputError
        From ``TrackDataSource.connection_id``: the scans' region lists or numbering bases
        differ.
    LtpaError
        From ``TrackDataSource.connection_id``: a scan's region list cannot be had.
    """
    if isinstance(connection, str) and "," in connection:
        connection = tuple(p.strip() for p in connection.split(","))
    if isinstance(connection, (tuple, list)):
        if len(connection) != 2:
            raise InputError(f"connection {connection!r}: expected an id or a pair of regions")
        if isinstance(source, StudyPatterns):
            raise InputError("a connection given as a pair of regions needs the "
                             "TrackDataSource (pass it instead of its patterns)")
        return source.connection_id(*connection)
    try:
        cid = int(connection)
        if isinstance(connection, bool) or cid != connection and str(cid) != str(connection):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"connection {connection!r}: expected a connection id or a pair of "
                         f"region names or numbers") from None
    if sp.regions is not None and sp.start is not None:
        n_pairs = sp.regions.shape[0] * (sp.regions.shape[0] + 1) // 2
        if not (cid == 0 or sp.start <= cid < sp.start + n_pairs):
            raise InputError(f"connection {cid} is not in the atlas ({sp.regions.shape[0]} "
                             f"regions: ids {sp.start}..{sp.start + n_pairs - 1})")
    return cid


def _blocks(n, size):
    size = max(1, int(size))
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _centers_per_block(sp, block_size) -> int:
    """``block_size`` centers, fewer when the study's patterns would make a block of more
    than ``BLOCK_ENTRIES`` entries (many scans, many streamlines, a large radius)."""
    per_center = sp.entries_per_center()
    by_memory = int(BLOCK_ENTRIES // per_center) if per_center > 0 else int(block_size)
    return max(1, min(int(block_size), by_memory))


def _run_stat(st, sp, lin, block_size, progress) -> dict:
    n = lin.shape[0]
    maps = {m: np.full(n, np.nan) for m in st.maps}
    bar = Progress(st.maps[0], n, enabled=progress)
    for lo, hi in _blocks(n, _centers_per_block(sp, block_size)):
        row, scan, conn, count = sp.block(lin[lo:hi])
        out = st.block(Block(hi - lo, row, scan, conn, count))
        for m, v in out.items():
            maps[m][lo:hi] = v
        sp.release()
        bar.update(hi - lo)
    bar.close()
    maps.update(st.finish(maps))
    return maps


# --------------------------------------------------------------------------- callables

_WORKER = {}


def _call_block(args):
    lo, hi = args
    w = _WORKER
    return lo, _apply(w["function"], w["sp"], w["lin"][lo:hi], w["min_tracks"], w["across"])


def _apply(function, sp, lin, min_tracks, across) -> list:
    """``function`` of the PatternMatrix at each center of ``lin`` (one block read)."""
    row, scan, conn, count = sp.block(lin)
    order = np.lexsort((conn, scan, row))
    row, scan, conn, count = row[order], scan[order], conn[order], count[order]
    bounds = np.searchsorted(row, np.arange(lin.shape[0] + 1))
    ijk = sp.ijk(lin)
    out = []
    for c in range(lin.shape[0]):
        a, b = bounds[c], bounds[c + 1]
        pm = sp.matrix_from_entries(scan[a:b], conn[a:b], count[a:b], tuple(ijk[c]),
                                    min_tracks, across)
        out.append(function(pm))
    return out


def _run_callable(function, sp, lin, n_jobs, block_size, progress, min_tracks, across):
    n = lin.shape[0]
    name = getattr(function, "__name__", "function")
    bar = Progress(name, n, enabled=progress)
    # a callable's blocks are small: the bar moves and the workers share the load
    size = max(1, min(_centers_per_block(sp, block_size),
                      math.ceil(n / (8 * n_jobs)) if n else 1, 2048))
    blocks = _blocks(n, size)
    results = [None] * n
    if n_jobs == 1 or len(blocks) <= 1:
        for lo, hi in blocks:
            results[lo:hi] = _apply(function, sp, lin[lo:hi], min_tracks, across)
            sp.release()
            bar.update(hi - lo)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if "fork" not in mp.get_all_start_methods():
            raise InputError("n_jobs > 1 needs the 'fork' start method (Linux, macOS)")
        _WORKER.update(function=function, sp=sp, lin=lin, min_tracks=min_tracks,
                       across=across)
        try:
            with ProcessPoolExecutor(max_workers=min(n_jobs, os.cpu_count() or n_jobs),
                                     mp_context=mp.get_context("fork")) as pool:
                for lo, vals in pool.map(_call_block, blocks):
                    results[lo:lo + len(vals)] = vals
                    bar.update(len(vals))
        finally:
            _WORKER.clear()
    bar.close()
    return _as_array(results)


def _as_array(results):
    try:
        arr = np.asarray(results, dtype=np.float64)
        if arr.ndim >= 1:
            return arr
    except (TypeError, ValueError):
        pass
    out = np.empty(len(results), dtype=object)
    out[:] = results
    return out
