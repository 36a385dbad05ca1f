"""A study's termination patterns under one atlas and radius, and one center's matrix.

``StudyPatterns`` (what ``TrackDataSource.termination_patterns(radius)`` returns) holds each
scan's ``ScanPatterns`` (read from the files the workflow built, memory-mapped, or computed
in memory when they are missing or out of date) and what the scans must share: the key grid,
the region list and the numbering of connection ids. ``at_ijk((i, j, k))`` gives a
``PatternMatrix``: per scan (rows, JSON order) and connection id (columns, sorted), the
distinct streamlines through the sphere, with dsi2's aggregator options: ``min_tracks``
(counts below it are dropped: 0) and ``across`` ("union": an id is a column when at least
one scan has it >= min_tracks; "intersection": when every scan does).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import GeometryError, InputError, LtpaError, StaleOutputError
from ..prepared.patterns import (
    ScanPatterns,
    check_radius,
    patterns_of_dataset,
    patterns_path,
    read_patterns,
)
from ..study.staleness import KEPT, MISSING, OK, OutputHashes, judge
from ..study.study import study_work_dir
from ..study.targets import RULE_PATTERNS, build_targets

ACROSS = ("union", "intersection")


def check_min_tracks(min_tracks) -> int:
    """Check a ``min_tracks`` option.

    Parameters
    ----------
    min_tracks : int
        The value given.

    Returns
    -------
    int
        ``min_tracks`` as a Python int.

    Raises
    ------
    InputError
        If it is not an integer (a bool is not one) or is below 1.
    """
    ok = isinstance(min_tracks, (int, np.integer)) and not isinstance(min_tracks, bool)
    if not ok or int(min_tracks) < 1:
        raise InputError(f"min_tracks {min_tracks!r}: expected an integer >= 1")
    return int(min_tracks)


def check_across(across) -> str:
    """Check an ``across`` option.

    Parameters
    ----------
    across : str
        The value given.

    Returns
    -------
    str
        ``across`` itself.

    Raises
    ------
    InputError
        If it is neither ``"union"`` nor ``"intersection"``.
    """
    if across not in ACROSS:
        raise InputError(f"across {across!r}: expected 'union' or 'intersection'")
    return across


@dataclass
class PatternMatrix:
    """Termination patterns of every scan at one center (dsi2's aggregator, as a matrix).

    ``counts[s, c]``: distinct streamlines of scan ``s`` (``scan_ids[s]``) with connection
    id ``connection_ids[c]`` through the sphere around ``ijk`` (0 where below
    ``min_tracks``); ``totals[s]``: the scan's distinct streamlines of any id (before
    ``min_tracks``); ``region_pairs[c]``: the two regions' names of a column (id 0:
    ``("unlabeled", "unlabeled")``). A voxel whose sphere holds no streamline (or none
    kept) gives a matrix with no columns.
    """

    counts: np.ndarray
    connection_ids: np.ndarray
    scan_ids: list
    region_pairs: list
    totals: np.ndarray
    scan_groups: list = field(default_factory=list)
    subject_ids: list = field(default_factory=list)
    ijk: tuple = ()
    radius: int = 0
    min_tracks: int = 1
    across: str = "union"

    @property
    def region_pair_names(self) -> list:
        """``"a -- b"`` per column."""
        return [f"{a} -- {b}" for a, b in self.region_pairs]

    @property
    def shape(self) -> tuple:
        """``counts.shape``: (scans, connection ids)."""
        return self.counts.shape

    def __len__(self):
        return int(self.counts.shape[0])

    def __repr__(self):
        return (f"PatternMatrix(ijk={self.ijk}, radius={self.radius}, {self.counts.shape[0]} "
                f"scans x {self.counts.shape[1]} connection ids)")


class StudyPatterns:
    """Every scan's termination patterns under the selected atlas at one radius."""

    def __init__(self, scans, *, scan_ids, scan_groups, subject_ids, radius, regions, start,
                 names, atlas, sources, notes=(), min_tracks=1, across="union"):
        self.scans = list(scans)  # ScanPatterns per scan, JSON order
        self.scan_ids = list(scan_ids)
        self.scan_groups = list(scan_groups)
        self.subject_ids = list(subject_ids)
        self.radius = int(radius)
        self.regions = regions  # sorted region ids (int64) or None
        self.start = start  # connection_ids_start_at or None
        self.names = names  # region id -> name
        self.atlas = dict(atlas or {})
        self.sources = list(sources)  # per scan: the pattern file, or "computed"
        self.notes = list(notes)
        self.min_tracks = check_min_tracks(min_tracks)
        self.across = check_across(across)
        first = self.scans[0]
        self.dim = first.dim
        self.affine = first.affine
        self.voxel_size = tuple(first.meta.get("voxel_size") or (1.0, 1.0, 1.0))

    def __len__(self):
        return len(self.scans)

    def __repr__(self):
        return (f"StudyPatterns({len(self)} scans, radius {self.radius}, grid "
                f"{'x'.join(map(str, self.dim))}, atlas {self.atlas})")

    # ------------------------------------------------------------------ centers
    def centers(self) -> np.ndarray:
        """Sorted linear key-grid numbers of every center of any scan.

        Returns
        -------
        numpy.ndarray
            (M,) int64, sorted and unique: the union of the scans' centers (C order).
        """
        n_vox = int(np.prod(self.dim))
        mark = np.zeros(n_vox, dtype=bool)
        for p in self.scans:
            mark[np.asarray(p.centers)] = True
        return np.flatnonzero(mark).astype(np.int64)

    def linear(self, ijk) -> np.ndarray:
        """Linear key-grid numbers (C order) of voxels.

        Parameters
        ----------
        ijk : array_like
            One voxel (i, j, k) or an (N, 3) array of them, integers.

        Returns
        -------
        numpy.ndarray
            (N,) int64.

        Raises
        ------
        ValueError
            If a voxel is outside the key grid (numpy's ``ravel_multi_index``).
        """
        ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
        return np.ravel_multi_index(tuple(ijk.T), self.dim).astype(np.int64)

    def ijk(self, lin) -> np.ndarray:
        """Key-grid voxels of linear numbers, the inverse of ``linear``.

        Parameters
        ----------
        lin : array_like
            Linear key-grid numbers (C order), any shape.

        Returns
        -------
        numpy.ndarray
            (N, 3) int64 voxels (i, j, k), one row per number in flattened order.

        Raises
        ------
        ValueError
            If a number is outside the key grid (numpy's ``unravel_index``).
        """
        return np.stack(np.unravel_index(np.asarray(lin, dtype=np.int64).reshape(-1), self.dim),
                        axis=1).astype(np.int64)

    # ------------------------------------------------------------------ names
    def pair_names(self, connection_ids) -> list:
        """``(name_a, name_b)`` of each connection id (id 0: unlabeled).

        Parameters
        ----------
        connection_ids : array_like of int
            Connection ids, any shape (flattened).

        Returns
        -------
        list of tuple of str
            One ``(name_a, name_b)`` per id, in order: ``("unlabeled", "unlabeled")`` for
            id 0; the two regions' names (``names``, else the region number as text) of an
            id of the atlas's numbering; ``("?<id>", "?<id>")`` for an id outside it. Without
            a region list or numbering base (``regions`` or ``start`` None), the id as text
            twice.
        """
        ids = np.asarray(connection_ids, dtype=np.int64).reshape(-1)
        if self.regions is None or self.start is None:
            return [(str(int(c)), str(int(c))) if c else ("unlabeled", "unlabeled")
                    for c in ids]
        n_reg = self.regions.shape[0]
        iu = np.triu_indices(n_reg)
        out = []
        for c in ids.tolist():
            k = c - self.start
            if c == 0 or not 0 <= k < iu[0].shape[0]:
                out.append(("unlabeled", "unlabeled") if c == 0 else (f"?{c}", f"?{c}"))
                continue
            a, b = int(self.regions[iu[0][k]]), int(self.regions[iu[1][k]])
            out.append((self.names.get(a, str(a)), self.names.get(b, str(b))))
        return out

    # ------------------------------------------------------------------ blocks
    def entries_per_center(self) -> float:
        """Mean entries per center summed over the scans: what one center of a block costs.

        Returns
        -------
        float
            The sum over the scans of ``n_entries / max(1, n_centers)``.
        """
        return sum(p.n_entries / max(1, p.n_centers) for p in self.scans)

    def release(self) -> None:
        """Drop the mapped pages every scan's file has had read (``ScanPatterns.release``)."""
        for p in self.scans:
            p.release()

    def block(self, lin):
        """The patterns of every scan at the centers ``lin``, as flat arrays.

        Returns ``(row, scan, connection_ids, counts)``: entry ``e`` is scan ``scan[e]``'s
        count of id ``connection_ids[e]`` at center ``lin[row[e]]``.

        Parameters
        ----------
        lin : numpy.ndarray
            (B,) linear key-grid numbers of the centers (int64, any order); a center that is
            not a scan's gives no entry of that scan.

        Returns
        -------
        row : numpy.ndarray
            (E,) int64 positions in ``lin``.
        scan : numpy.ndarray
            (E,) int64 scan positions (JSON order), grouped by scan in order.
        connection_ids : numpy.ndarray
            (E,) int64 connection ids.
        counts : numpy.ndarray
            (E,) int64 distinct streamlines of the id in the sphere (``min_tracks`` not
            applied).
        """
        rows, scans, conns, counts = [], [], [], []
        for s, p in enumerate(self.scans):
            r, c, n = p.rows(lin)
            rows.append(r)
            scans.append(np.full(r.shape[0], s, dtype=np.int64))
            conns.append(c)  # rows gives int64
            counts.append(n)
        if not rows:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z, z
        return (np.concatenate(rows), np.concatenate(scans), np.concatenate(conns),
                np.concatenate(counts))

    def matrix_from_entries(self, scan, conn, count, ijk=(), min_tracks=None, across=None):
        """A ``PatternMatrix`` from one center's entries (see ``block``).

        Parameters
        ----------
        scan : numpy.ndarray
            (E,) int64 scan positions of the entries (JSON order).
        conn : numpy.ndarray
            (E,) int64 connection ids of the entries.
        count : numpy.ndarray
            (E,) int64 counts of the entries.
        ijk : tuple of int, optional
            The center's key-grid voxel, recorded in the matrix (default ``()``).
        min_tracks : int, optional
            Counts below it are dropped; None (default): this object's ``min_tracks``.
        across : str, optional
            ``"union"`` or ``"intersection"``; None (default): this object's ``across``.

        Returns
        -------
        PatternMatrix
            ``counts`` (S, C) int64 over every scan and the sorted ids kept (an entry >=
            ``min_tracks`` in some scan for "union", in every scan for "intersection");
            ``totals`` (S,) int64 of every entry before ``min_tracks``. C may be 0.

        Raises
        ------
        InputError
            If ``min_tracks`` is not an integer >= 1 or ``across`` is neither "union" nor
            "intersection" (``check_min_tracks``, ``check_across``).
        """
        mt = self.min_tracks if min_tracks is None else check_min_tracks(min_tracks)
        across = self.across if across is None else check_across(across)
        n_s = len(self.scans)
        totals = np.bincount(scan, weights=count, minlength=n_s).astype(np.int64)
        keep = count >= mt
        scan, conn, count = scan[keep], conn[keep], count[keep]
        ids, col = np.unique(conn, return_inverse=True)
        full = np.zeros((n_s, ids.shape[0]), dtype=np.int64)
        full[scan, col] = count
        if across == "intersection":
            cols = (full > 0).all(axis=0)
            ids, full = ids[cols], full[:, cols]
        return PatternMatrix(
            counts=full, connection_ids=ids, scan_ids=self.scan_ids,
            region_pairs=self.pair_names(ids), totals=totals, scan_groups=self.scan_groups,
            subject_ids=self.subject_ids, ijk=tuple(int(v) for v in ijk), radius=self.radius,
            min_tracks=mt, across=across)

    def at_ijk(self, ijk, min_tracks=None, across=None) -> PatternMatrix:
        """The ``PatternMatrix`` at key-grid voxel ``ijk`` = (i, j, k).

        Parameters
        ----------
        ijk : array_like of int
            The center (i, j, k): three integers (a numpy integer array or a sequence of
            Python ints).
        min_tracks : int, optional
            Counts below it are dropped; None (default): this object's ``min_tracks``.
        across : str, optional
            ``"union"`` or ``"intersection"``; None (default): this object's ``across``.

        Returns
        -------
        PatternMatrix
            Every scan's counts at the center; no columns when no streamline (or none kept)
            passes through the sphere.

        Raises
        ------
        InputError
            If ``ijk`` is not three integers or lies outside the key grid, or
            ``min_tracks`` or ``across`` is not a valid value.
        """
        v = np.asarray(ijk).reshape(-1)
        if v.shape[0] != 3 or v.dtype.kind not in "iu":
            raise InputError(f"ijk {ijk!r}: expected three integers (i, j, k)")
        if ((v < 0) | (v >= np.asarray(self.dim))).any():
            raise InputError(f"voxel {tuple(int(x) for x in v)} is outside the key grid of "
                             f"shape {'x'.join(map(str, self.dim))}")
        _, scan, conn, count = self.block(self.linear(v))
        return self.matrix_from_entries(scan, conn, count, tuple(v), min_tracks, across)


# --------------------------------------------------------------------------- from a source


def study_patterns(source, radius=0, *, min_tracks=1, across="union") -> StudyPatterns:
    """The study's patterns under ``source``'s selected atlas (``TrackDataSource``).

    Each scan's pattern file (``patterns_path`` beside its npy) is read when the workflow
    would call it up to date: ``ltpa.study.staleness.judge`` of the workflow's own job for it
    (``pattern_jobs``: its sidecar against the pkl and npy on disk now, a touched input of
    unchanged content included, and the radius, scan and atlas), the pkl and npy taken as
    they are; and when the file itself holds this radius, scan and region list
    (``_not_this``). Otherwise the scan's patterns are computed in memory (not written), with
    one warning naming the scans and why (the workflow builds the files: config
    ``patterns``).

    Parameters
    ----------
    source : TrackDataSource
        The study, with its atlas selected (``change_atlas``).
    radius : int, optional
        Sphere radius in voxels, 0..10 (default 0).
    min_tracks : int, optional
        The default ``min_tracks`` of the result's ``at_ijk`` (default 1).
    across : str, optional
        The default ``across`` of the result's ``at_ijk``: ``"union"`` (default) or
        ``"intersection"``.

    Returns
    -------
    StudyPatterns
        Every scan's patterns in JSON order; its ``sources`` name each scan's pattern file
        or ``"computed"``, its ``notes`` hold the warning (if any).

    Raises
    ------
    InputError
        If ``radius``, ``min_tracks`` or ``across`` is not a valid value, no atlas is
        selected, or a scan's npy does not exist or cannot be decoded into regions.
    DamagedFileError
        If a scan's npy is not one integer connection id per streamline (a negative or too
        large id included), or its sidecar's region list was edited.
    StaleOutputError
        If a scan's npy and pkl disagree on the number of streamlines, or the scans'
        region lists or numbering bases differ.
    GeometryError
        If the scans' key grids differ (shape or affine).
    LtpaError
        If a scan's pkl cannot be loaded. The messages of errors met while computing a
        scan's patterns name the scan and its ``track_labels`` field.
    """

    r = check_radius(radius)
    check_min_tracks(min_tracks)
    check_across(across)
    labels = source._require_atlas()
    jobs = pattern_jobs(source, r)
    hashes = _output_hashes(source)
    scans, sources, computed = [], [], []
    for pos, lab in enumerate(labels):
        rec = source._scans[pos]
        path = patterns_path(lab.numpy_path, r)
        p, why = _built(source, pos, lab, path, jobs.get(str(path)), r, hashes)
        if p is None:
            labs = source._labels_of(pos, lab)
            ds = source.dataset(pos)
            inputs = {"pkl_path": _identity(rec.pkl_path),
                      "numpy_path": _identity(lab.numpy_path)}
            try:
                p = patterns_of_dataset(ds, labs.ids, r, region_ids=labs.regions,
                                        start=labs.start, inputs=inputs)
            except LtpaError as exc:
                raise exc.in_context(rec.where("track_labels")) from None
            computed.append((rec.scan_id, why))
            sources.append("computed")
        else:
            sources.append(str(path))
        scans.append(p)
    notes = []
    if computed:
        shown = ", ".join(f"{sid!r}" for sid, _ in computed[:5])
        more = f" and {len(computed) - 5} more" if len(computed) > 5 else ""
        reasons = sorted({why for _, why in computed})
        notes.append(f"termination patterns at radius {r} were computed on the fly for scan"
                     f"{'s' if len(computed) > 1 else ''} {shown}{more} ({'; '.join(reasons)}); "
                     f"the workflow builds them once (config: patterns: {{radii: [{r}]}})")
        warnings.warn(notes[-1], stacklevel=_outside_ltpa())
    _check_same(source, labels, scans)
    regions, start = source._decoding(0, labels[0])
    names = source.region_names()
    table = source.scans
    return StudyPatterns(
        scans, scan_ids=source.scan_ids, scan_groups=[rec.scan_group for rec in source._scans],
        subject_ids=table.column("subject_id"), radius=r, regions=regions, start=start,
        names=names, atlas=source.atlas, sources=sources, notes=notes, min_tracks=min_tracks,
        across=across)


def _outside_ltpa() -> int:
    """The ``stacklevel`` of a warning raised by this module's caller that points at the
    first frame outside the ltpa package (the user's call, through ``run_ltpa`` or not)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def pattern_jobs(source, radius) -> dict:
    """The workflow's job for the pattern file at ``radius`` of every scan and atlas entry.

    The targets are made by ``ltpa.study.targets.build_targets`` (the workflow's own function,
    its config ``patterns`` set to this radius and every atlas) and turned into jobs under
    the source's config, so the inputs, parameters (scan_id, atlas key, radius) and paths are
    those the workflow would build and judge.

    Parameters
    ----------
    source : TrackDataSource
        The study (its scans and config).
    radius : int
        Sphere radius in voxels (already checked).

    Returns
    -------
    dict
        Output path (str) -> ``ltpa.study.spec.JobSpec``.
    """
    targets = build_targets(source._scans, {"patterns": {"radii": [int(radius)]}})
    return {str(t.output): t.spec(source.config) for t in targets if t.rule == RULE_PATTERNS}


def _output_hashes(source):
    """The study's cache of output hashes (``staleness.OutputHashes``), read only here: a
    judgement of a few pattern files must not replace what ``ltpa status`` keeps."""
    try:
        folder = study_work_dir(source.json_source, source.config)
    except (TypeError, ValueError, OSError):
        return OutputHashes()
    return OutputHashes(folder / "cache" / "outputs.json")


def _built(source, pos, lab, path, spec, r, hashes):
    """``(ScanPatterns, None)`` for a built pattern file the workflow calls up to date and
    that holds what is asked; else ``(None, why)``."""
    if spec is None or not path.exists():
        return None, "not built"
    verdict = judge(spec, {}, {}, hashes)  # the pkl and npy as they are (the reader reads them)
    if verdict.status == MISSING:
        return None, "not built"
    if verdict.status not in (OK, KEPT):
        return None, f"{str(path)!r} is {verdict.status} ({verdict.reason})"
    try:
        p = read_patterns(path)
    except LtpaError as exc:
        return None, str(exc)
    why = _not_this(source, pos, lab, p, r)
    if why:
        p.release()
        return None, f"{str(path)!r} is out of date ({why})"
    return p, None


def _not_this(source, pos, lab, p: ScanPatterns, r) -> str | None:
    """Why a readable pattern file does not hold this scan's patterns at radius ``r`` under
    this atlas entry (its own meta: radius, scan_id, region list and numbering), or None."""
    try:
        radius = p.radius
    except (KeyError, TypeError, ValueError):
        return "it records no radius"
    if radius != r:
        return f"it holds patterns of radius {radius}, not {r}"
    scan_id = p.meta.get("scan_id")
    if scan_id is not None:
        mine = source._scans[pos].scan_id  # the JSON's (no pkl opened for a built file)
        if scan_id != mine:
            return f"it holds scan {scan_id!r}, not {mine!r}"
    kept = p.meta.get("region_ids")
    if kept is not None:
        regions, start = source._decoding(pos, lab)
        if regions is not None and not np.array_equal(np.asarray(kept, dtype=np.int64),
                                                       regions):
            return (f"it was built with a region list of {len(kept)} regions, the npy "
                    f"decodes with {regions.shape[0]}")
        was = p.meta.get("connection_ids_start_at")
        if was is not None and start is not None and int(was) != int(start):
            return f"it numbers connection ids from {was}, the npy from {start}"
    return None


def _identity(path) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_same(source, labels, scans) -> None:
    """Every scan in one key grid, with one region list and numbering."""
    first = scans[0]
    sid0 = source._scans[0].scan_id
    for pos, p in enumerate(scans[1:], start=1):
        sid = source._scans[pos].scan_id
        if p.dim != first.dim or (p.affine is None) != (first.affine is None) or \
                (p.affine is not None and not np.allclose(p.affine, first.affine, atol=1e-3)):
            raise GeometryError(f"scans {sid0!r} and {sid!r} have different key grids (shape "
                                f"{'x'.join(map(str, first.dim))} vs {'x'.join(map(str, p.dim))}, "
                                f"or another affine): a center would be a different place in "
                                f"each")
    regions0, start0 = source._decoding(0, labels[0])
    for pos, lab in enumerate(labels[1:], start=1):
        regions, start = source._decoding(pos, lab)
        sid = source._scans[pos].scan_id
        if not np.array_equal(regions, regions0):
            raise StaleOutputError(f"scans {sid0!r} and {sid!r} have different region lists "
                                   f"({regions0.shape[0]} and {regions.shape[0]} regions; file "
                                   f"{str(lab.numpy_path)!r}): a connection id means a different "
                                   f"pair in each")
        if start != start0:
            raise StaleOutputError(f"scans {sid0!r} and {sid!r} number connection ids from "
                                   f"{start0} and {start} (file {str(lab.numpy_path)!r})")
