"""The prepared data in use: a whole study queried from Python (dsi2's ``TrackDataSource``).

``TrackDataSource(local_data.json)`` reads the study exactly as the workflow does
(``ltpa.study.study.load_study``: the schema, path resolution, the same staleness verdicts as
``ltpa status``) and opens each scan's pkl only when a query needs it, with
``ltpa.load_track_dataset`` (the big arrays are read in place from a memory map of the pkl,
so opening one costs well under a millisecond and no array is copied).

A voxel query runs per scan on the pkl's CSR index (sorted linear voxel numbers, ``indptr``,
``ids``): one ``searchsorted`` of every query voxel at once, one gather of every matching id
range, and a de-duplication (a bitmap over the scan's streamlines when the ranges are long,
``np.unique`` when they are short). After each scan the map's pages are given back
(``madvise(MADV_DONTNEED)``: the file stays in the page cache, this process stops holding
it), so the peak memory of a query over hundreds of scans is that of one scan plus the
results. At most ``max_open`` pkls stay open (each map holds a file descriptor).

Connection ids (``change_atlas``) are each scan's ``track_labels[].numpy_path``, read with
``np.load(mmap_mode="r")`` and decoded with the region list and numbering base the labeling
job recorded in the npy's sidecar (``<numpy_path>.json``), else from the entry's
``graphml_path`` / ``labels_path`` and the config's ``connection_ids_start_at``: id
``start + k`` is the k-th pair ``(i, j)``, ``i <= j``, of ``np.triu_indices(R)`` over the sorted
region list (``ltpa.prepared.connections``); id 0 (with ``start = 1``) is a streamline with
fewer than two labeled points.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..dataset import load_track_dataset
from ..errors import DamagedFileError, InputError, LtpaError, StaleOutputError
from ..formats.regions import region_names
from ..prepared.connections import (
    connection_id,
    decode_regions,
    pair_counts,
    pairs_to_matrix,
    region_list,
)
from ..study import sidecar
from ..study.config import default_config
from ..study.localdata import problem_text
from ..study.staleness import MISSING, OUT_OF_DATE
from ..study.study import load_study
from ..study.targets import RULE_INDEX, RULE_LABEL
from .lookup import ids_at, release_pages
from .matrix import study_patterns
from .results import ConnectionMatrices, QueryResults, ScanQuery, ScanTable, scan_table
from .roi import Roi, key_grid, linear

__all__ = ["TrackDataSource"]


@dataclass
class _Labels:
    """One scan's connection ids (mapped) and how to decode them."""

    ids: np.ndarray
    regions: np.ndarray
    start: int


# --------------------------------------------------------------------------- the source


class TrackDataSource:
    """A study's prepared data, queried as dsi2's ``TrackDataSource`` was.

    ``TrackDataSource("local_data.json")`` validates the JSON and resolves its paths as the
    workflow does (``config``: the workflow config, default ``config/config.yaml`` of this
    checkout, with the schema's defaults (``ltpa.study.config``); ``data_root`` overrides where
    relative paths resolve). Every scan needs its pkl; a missing one is an error naming scan,
    field and file. Outputs that ``ltpa status`` would call out of date are listed in
    ``warnings`` (and warned about once).

    - ``scans``: the metadata as a ``ScanTable``; ``scan_ids``; ``len(source)``;
    - ``dataset(scan)``: one scan's ``TrackDataset`` (by position or scan_id), opened lazily;
    - ``query_ijk(voxels_or_mask, every=0)``: per scan, the streamlines through any voxel;
    - ``change_atlas(name, **parameters)``, ``query_connection_id(ids)``,
      ``connection_matrices()``, ``connection_id(a, b)``, ``decode(ids, scan)``,
      ``region_names()``.
    """

    def __init__(self, json_source, *, config=None, data_root=None, max_open=8):
        cfg = dict(default_config() if config is None else config)
        if data_root is not None:
            cfg["data_root"] = str(data_root)
        study = load_study(json_source, cfg, check_inputs_of_jobs=False, strict=False)
        self.json_source = study.path
        self.config = study.config  # with the schema's defaults
        self._scans = list(study.scans)
        self._by_id = {rec.scan_id: pos for pos, rec in enumerate(self._scans)}
        self._max_open = max(1, int(max_open))
        self._open: OrderedDict = OrderedDict()
        self._atlas = None  # (query dict, [LabelRecord per scan])
        self._decode_cache = {}
        self.warnings = [w for w in study.warnings if "; keeping the existing output" not in w]
        problems = []
        missing_npy = {}
        for t, v in zip(study.targets, study.verdicts):
            if t.rule == RULE_INDEX and v.status == MISSING:
                problems.append(f"{t.where('pkl_path')}: file {str(t.output)!r} does not exist "
                                f"(make it with the workflow; `ltpa status` lists what is "
                                f"missing)")
            elif t.rule == RULE_LABEL and v.status == MISSING:
                missing_npy[str(t.output)] = t
            elif t.rule in (RULE_INDEX, RULE_LABEL) and v.status == OUT_OF_DATE:
                self.warnings.append(f"{t.where(t.output_field)}: {str(t.output)!r} is out of "
                                     f"date ({v.reason}); it is read as it is")
        for rec in self._scans:
            if rec.pkl_path is None:
                problems.append(f"{rec.where('pkl_path')}: is not given; every scan needs its "
                                f"prepared pkl")
        if problems:
            raise LtpaError(problem_text(self.json_source, problems))
        self._missing_npy = missing_npy
        self._table = None
        if self.warnings:
            more = f" (and {len(self.warnings) - 1} more: see .warnings)" \
                if len(self.warnings) > 1 else ""
            warnings.warn(f"{self.json_source}: {self.warnings[0]}{more}", stacklevel=2)

    # ------------------------------------------------------------------ the study
    def __len__(self):
        return len(self._scans)

    @property
    def scan_ids(self) -> list:
        """The scans' scan_ids, in JSON order."""
        return [rec.scan_id for rec in self._scans]

    @property
    def scans(self) -> ScanTable:
        """The scans' metadata as a ``ScanTable`` (made on first use, then kept)."""
        if self._table is None:
            self._table = scan_table(self._scans)
        return self._table

    @property
    def atlas(self) -> dict | None:
        """The selection of the last ``change_atlas`` (name and parameters), or None."""
        return None if self._atlas is None else dict(self._atlas[0])

    def _position(self, scan) -> int:
        if isinstance(scan, (int, np.integer)) and not isinstance(scan, bool):
            if not -len(self._scans) <= int(scan) < len(self._scans):
                raise IndexError(f"scan position {scan} of a study of {len(self._scans)} scans")
            return int(scan) % len(self._scans)
        pos = self._by_id.get(scan)
        if pos is None:
            raise KeyError(f"no scan {scan!r} in {str(self.json_source)!r}")
        return pos

    def dataset(self, scan):
        """The ``TrackDataset`` of a scan (position or scan_id), from its pkl.

        The dataset stays open for the next call; at most ``max_open`` stay open, the least
        recently used let go first.

        Parameters
        ----------
        scan : int or str
            The scan's position in JSON order (negative: from the end) or its scan_id.

        Returns
        -------
        ltpa.dataset.TrackDataset
            The scan's dataset (``ltpa.load_track_dataset``: its big arrays read in place
            from a memory map of the pkl).

        Raises
        ------
        IndexError
            If a position is outside the study's scans.
        KeyError
            If no scan has this scan_id.
        LtpaError
            If the pkl cannot be loaded (missing, damaged, not a track dataset); the message
            names the scan and its ``pkl_path`` field.
        """
        pos = self._position(scan)
        ds = self._open.get(pos)
        if ds is not None:
            self._open.move_to_end(pos)
            return ds
        rec = self._scans[pos]
        try:
            ds = load_track_dataset(rec.pkl_path)
        except LtpaError as exc:
            raise exc.in_context(rec.where("pkl_path")) from None
        self._open[pos] = ds
        while len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return ds

    def close(self) -> None:
        """Let go of the open pkls (their maps close when no result still uses them)."""
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ voxel queries
    def query_ijk(self, ijks, every=0) -> QueryResults:
        """Per scan (JSON order), the streamlines through any of the voxels ``ijks``.

        ``ijks``: key-grid voxels, as a list of ``(i, j, k)`` or an (N, 3) integer array; or a
        mask: a NIfTI file (path) or nibabel image whose nonzero voxels are the ROI, which must
        be 3-D on each scan's key grid up to axis flips and permutations (another voxel order
        of the same grid: reoriented by index, as the workflow does for atlases,
        ``ltpa.formats.grids.conform_plan``); or a 3-D array of the key grid's shape. Voxels are
        refused when the scans' key grids have different voxel orders (native grids of RAS
        and LPS trks): the same (i, j, k) is another place in each; use a mask or
        ``query_mm``. ``every``: keep every n-th selected streamline (dsi2's, 0 = all).

        Parameters
        ----------
        ijks : array_like, str, os.PathLike, image or numpy.ndarray
            The voxels or the mask, as above (``Roi.from_input``).
        every : int, optional
            Keep every ``every``-th selected streamline (the ``every``-th, the
            ``2 * every``-th, ...); 0 (default) or 1: all of them.

        Returns
        -------
        QueryResults
            One ``ScanQuery`` per scan, in JSON order: the sorted int32 ids of its selected
            streamlines, with the atlas selected now (if any) for their ``connections``.

        Raises
        ------
        InputError
            If ``ijks`` is not a usable voxel list or mask, or ``every`` is negative.
        LtpaError
            If the ROI does not fit a scan's key grid (a voxel outside it, a mask on another
            grid) or voxels are given and the scans' key grids have different voxel orders
            (one message naming the scans), or a scan's pkl cannot be loaded.
        """
        return self._query(Roi.from_input(ijks), every)

    def query_mm(self, points, every=0) -> QueryResults:
        """Per scan, the streamlines through the voxels whose centres are nearest to
        ``points`` (RAS mm, an (N, 3) array or a list of (x, y, z)), placed on each scan's
        key grid by its affine: the same places whatever the scans' voxel orders.

        Parameters
        ----------
        points : array_like
            One point (x, y, z) or an (N, 3) array of them, in RAS mm (``Roi.from_mm``).
        every : int, optional
            Keep every ``every``-th selected streamline; 0 (default) or 1: all of them.

        Returns
        -------
        QueryResults
            One ``ScanQuery`` per scan, in JSON order (as ``query_ijk``).

        Raises
        ------
        InputError
            If the points are not finite (x, y, z) triples, or ``every`` is negative.
        LtpaError
            If a scan's pkl header has no affine or a point falls outside a scan's key grid
            (one message naming the scans), or a scan's pkl cannot be loaded.
        """
        return self._query(Roi.from_mm(points), every)

    def _query(self, roi, every) -> QueryResults:
        every = _every(every)
        label = self._current_label_records()
        out = QueryResults()
        problems = {}
        lin_cache = {}
        orders = {}
        for pos, rec in enumerate(self._scans):
            ds = self.dataset(pos)
            grid = key_grid(ds)
            orders.setdefault(grid.order(), []).append(rec.scan_id)
            voxels, problem = roi.voxels_on(grid)
            if problem:
                problems.setdefault(problem, []).append(rec.scan_id)
                continue
            if problems:
                continue  # an error is coming: only check the other scans' grids
            key = (grid.dim, grid.affine_key())
            if key not in lin_cache:
                lin_cache[key] = linear(voxels, grid.dim)
            try:
                ids = ids_at(ds.tracks_at_ijk, lin_cache[key], ds.get_ntracks())
            finally:
                release_pages(ds)
            if every > 1:
                ids = np.ascontiguousarray(ids[every - 1::every])
            out.append(ScanQuery(self, pos, ids, None if label is None else label[pos]))
        if roi.kind == "voxels" and len(orders) > 1 and roi.voxels.shape[0]:
            mixed = "; ".join(f"{order}: scan{'s' if len(ids) > 1 else ''} {_some(ids)}"
                              for order, ids in orders.items())
            problems.setdefault(
                f"the scans' key grids have different voxel orders ({mixed}): a voxel (i, j, "
                f"k) is a different place in each; give a mask (reoriented to each scan's "
                f"grid) or coordinates in mm (--mm, query_mm)", [])
        if problems:
            lines = [f"{text} (scan{'s' if len(sids) > 1 else ''} {_some(sids)})" if sids
                     else text for text, sids in problems.items()]
            raise LtpaError(f"{str(self.json_source)!r}: query_ijk: " + "; ".join(lines))
        return out

    # ------------------------------------------------------------------ atlases
    def change_atlas(self, name=None, **parameters) -> list:
        """Select each scan's ``track_labels`` entry by name and parameters (dsi2's dictmatch).

        An entry matches when its name equals ``name`` (if given) and each given parameter
        equals its value in the entry's ``parameters``; every scan must have exactly one
        matching entry with a ``numpy_path`` that exists. Returns the selected npy paths.

        On an error the previous selection is kept.

        Parameters
        ----------
        name : str, optional
            The atlas's name (the entry's ``name``); None (default): any name.
        **parameters
            Values the entry's ``parameters`` must hold (e.g. ``scale=33``).

        Returns
        -------
        list of pathlib.Path
            The selected entry's ``numpy_path`` of each scan, in JSON order.

        Raises
        ------
        InputError
            If neither a name nor a parameter is given, or no scan has a matching entry (the
            message lists the study's atlases).
        LtpaError
            If some scan has no or several matching entries, or its matching entry's npy
            does not exist (one message listing every such scan).
        """
        query = {} if name is None else {"name": name}
        query.update(parameters)
        if not query:
            raise InputError("change_atlas: give an atlas name and/or parameters, e.g. "
                            "change_atlas('Lausanne2008', scale=33)")
        chosen, problems = [], []
        any_match = False
        for rec in self._scans:
            found = [lab for lab in rec.labels if _dictmatch(query, lab)]
            any_match = any_match or bool(found)
            if len(found) == 1:
                chosen.append(found[0])
                npy = str(found[0].numpy_path)
                if npy in self._missing_npy or not os.path.exists(npy):
                    problems.append(f"{rec.where(_field(found[0], 'numpy_path'))}: file "
                                    f"{npy!r} does not exist (make it with the workflow)")
                continue
            what = "no entry matches" if not found else f"{len(found)} entries match"
            problems.append(f"{rec.where('track_labels')}: {what} {_describe(query)}; its "
                            f"entries: {_entries(rec.labels)}")
        if not any_match:
            raise InputError(f"{str(self.json_source)!r}: change_atlas: no scan has an atlas "
                            f"matching {_describe(query)}; the study's atlases: "
                            f"{self._atlas_choices()}")
        if problems:
            raise LtpaError(problem_text(self.json_source, problems))
        self._atlas = (query, chosen)
        return [lab.numpy_path for lab in chosen]

    def _atlas_choices(self) -> str:
        seen = []
        for rec in self._scans:
            for lab in rec.labels:
                text = _entry_text(lab)
                if text not in seen:
                    seen.append(text)
        return "; ".join(seen) if seen else "none (no scan has track_labels with numpy_path)"

    def _current_label_records(self):
        return None if self._atlas is None else self._atlas[1]

    def _require_atlas(self):
        if self._atlas is None:
            raise InputError(f"{str(self.json_source)!r}: no atlas selected: call "
                            f"change_atlas(name, **parameters) first; the study's atlases: "
                            f"{self._atlas_choices()}")
        return self._atlas[1]

    def _decoding(self, pos, lab):
        """(sorted region ids, numbering base) of a scan's npy: its sidecar, else its lists."""
        key = str(lab.numpy_path)
        if key in self._decode_cache:
            return self._decode_cache[key]
        rec = self._scans[pos]
        body, _ = sidecar.read(lab.numpy_path)
        if body is not None and isinstance(body.get("region_ids"), list) \
                and body.get("connection_ids_start_at") in (0, 1):
            try:
                regions = sidecar.region_ids(body, lab.numpy_path)
            except LtpaError as exc:
                raise exc.in_context(rec.where(_field(lab, "numpy_path"))) from None
            start = int(body["connection_ids_start_at"])
        else:
            try:
                regions, _ = region_list(lab.graphml_path, lab.labels_path)
                if regions is None:
                    raise InputError(
                        f"file {key!r} has no sidecar and the entry gives no graphml_path or "
                        f"labels_path: its connection ids cannot be decoded into regions")
            except LtpaError as exc:
                raise exc.in_context(rec.where(_field(lab, "numpy_path"))) from None
            start = self.config["connection_ids_start_at"]
        self._decode_cache[key] = (regions, start)
        return regions, start

    def _labels_of(self, pos, lab) -> _Labels:
        """A scan's connection ids (memory-mapped), checked against its pkl, and their decoding."""
        rec = self._scans[pos]
        where = rec.where(_field(lab, "numpy_path"))
        path = str(lab.numpy_path)
        try:
            conn = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"{where}: file {path!r} does not exist") from None
        except (OSError, ValueError) as exc:
            raise DamagedFileError(f"{where}: file {path!r} is not a .npy array ({exc})") from None
        if conn.ndim != 1 or conn.dtype.kind not in "iu":
            raise DamagedFileError(f"{where}: file {path!r} holds a {conn.dtype} array of shape "
                            f"{conn.shape}; expected one integer connection id per streamline")
        n = self.dataset(pos).get_ntracks()
        if conn.shape[0] != n:
            raise StaleOutputError(
                f"{where}: file {path!r} has {conn.shape[0]} connection ids but the "
                f"pkl {str(rec.pkl_path)!r} has {n} streamlines; one of them is out "
                f"of date (see `ltpa status`)")
        regions, start = self._decoding(pos, lab)
        return _Labels(conn, regions, start)

    def query_connection_id(self, connection_id, every=0) -> QueryResults:
        """Per scan, the streamlines whose connection id (selected atlas) is any of these.

        Parameters
        ----------
        connection_id : int or array_like of int
            One connection id or several (any shape; cast to int64).
        every : int, optional
            Keep every ``every``-th selected streamline; 0 (default) or 1: all of them.

        Returns
        -------
        QueryResults
            One ``ScanQuery`` per scan, in JSON order: the sorted int32 ids of its
            streamlines whose id is one of ``connection_id``.

        Raises
        ------
        InputError
            If no atlas is selected, ``every`` is negative, a scan's npy does not exist, or
            it has no sidecar and its entry's region list is missing or unusable.
        DamagedFileError
            If a scan's npy is not a 1-D integer array, or its sidecar's region list was
            edited.
        StaleOutputError
            If a scan's npy has not one id per streamline of its pkl.
        """
        labels = self._require_atlas()
        wanted = np.unique(np.asarray(connection_id, dtype=np.int64).reshape(-1))
        every = _every(every)
        out = QueryResults()
        for pos, lab in enumerate(labels):
            conn = self._labels_of(pos, lab).ids
            ids = np.flatnonzero(np.isin(conn, wanted)).astype(np.int32)
            del conn
            if every > 1:
                ids = np.ascontiguousarray(ids[every - 1::every])
            out.append(ScanQuery(self, pos, ids, lab))
        return out

    def termination_patterns(self, radius=0, *, min_tracks=1, across="union"):
        """Every scan's termination patterns at ``radius`` under the selected atlas.

        Returns a ``ltpa.analysis.matrix.StudyPatterns``: ``.at_ijk((i, j, k))`` gives the
        ``PatternMatrix`` of a center (``min_tracks`` / ``across``: dsi2's aggregator
        options, also per call). Reads the files the workflow built (beside each npy,
        ``<npy stem>.patterns-r<R>.npz``); computes the missing or out-of-date ones in
        memory, with a warning naming the scans.

        Parameters
        ----------
        radius : int, optional
            The sphere's radius in voxels (default 0: the center voxel only).
        min_tracks : int, optional
            dsi2's aggregator option: the default of ``at_ijk`` (default 1).
        across : str, optional
            ``"union"`` (default) or ``"intersection"``: the default of ``at_ijk``.

        Returns
        -------
        ltpa.analysis.matrix.StudyPatterns
            The patterns of every scan, in JSON order.

        Raises
        ------
        InputError
            If no atlas is selected, or ``radius``, ``min_tracks`` or ``across`` is not a
            valid value.
        LtpaError
            If a scan's pkl or npy cannot be read or do not agree.
        """
        return study_patterns(self, radius, min_tracks=min_tracks, across=across)

    def connection_id(self, region_a, region_b) -> int:
        """The connection id of a pair of regions under the selected atlas.

        A region is its number (atlas label; an int or a string of digits) or its name
        (``region_names()``: the graphml's dn_name / name).

        Parameters
        ----------
        region_a, region_b : int or str
            The two regions, in either order: a number (or a string of digits) or a name.

        Returns
        -------
        int
            The pair's connection id under the scans' region list and numbering base
            (``ltpa.prepared.connections.connection_id``).

        Raises
        ------
        InputError
            If no atlas is selected, a region is not in the region list, or a name names no
            region or several.
        StaleOutputError
            If the scans' npys use different region lists or numbering bases.
        LtpaError
            If a scan's region list cannot be had: its npy's sidecar is damaged, or it has
            none and its entry's region list is missing or unusable.
        """
        labels = self._require_atlas()
        found = {self._decoding(pos, lab)[1] for pos, lab in enumerate(labels)}
        regions, start = self._decoding(0, labels[0])
        for pos, lab in enumerate(labels):
            r, _ = self._decoding(pos, lab)
            if not np.array_equal(r, regions):
                raise StaleOutputError(f"scans {self._scans[0].scan_id!r} and "
                                f"{self._scans[pos].scan_id!r} have different region lists: "
                                f"a connection id means a different pair in each")
        if len(found) > 1:
            raise StaleOutputError("the scans' npys use different numbering bases "
                            "(connection_ids_start_at); a pair has a different id in each")
        idx = []
        for r in (region_a, region_b):
            r = self._region_number(r, regions, labels[0])
            k = int(np.searchsorted(regions, int(r)))
            if k >= regions.shape[0] or regions[k] != int(r):
                raise InputError(f"region {r!r} is not in the region list of the selected atlas "
                                f"({regions.shape[0]} regions, {int(regions[0])}.."
                                f"{int(regions[-1])})")
            idx.append(k)
        return connection_id(idx[0], idx[1], regions.shape[0], start)

    def _region_number(self, region, regions, lab) -> int:
        """A region given by number or name -> its number (atlas label)."""
        if isinstance(region, (int, np.integer)) and not isinstance(region, bool):
            return int(region)
        text = str(region).strip()
        if text.lstrip("-").isdigit():
            return int(text)
        names = _region_names(lab, regions)
        found = [int(r) for r, name in zip(regions, names) if name == text]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InputError(f"region name {text!r} names {len(found)} regions of the selected "
                             f"atlas ({', '.join(map(str, found))}): give the number")
        near = [n for n in names if text.lower() in n.lower()][:5]
        hint = f"; names like it: {', '.join(near)}" if near else ""
        raise InputError(f"region {text!r} is not a region name or number of the selected atlas "
                         f"({regions.shape[0]} regions{hint})")

    def connection_matrices(self) -> ConnectionMatrices:
        """A (scans x R x R) int32 array of streamline counts per region pair (selected atlas).

        Every scan must use the same region list (they do when their graphml is the same).
        With ``connection_ids_start_at: 0`` id 0 is both the first region's self-connection
        and "unlabeled" (dsi2's numbering); it is left out of the matrix, as unlabeled.

        Returns
        -------
        ConnectionMatrices
            ``counts`` (scans, R, R) int32 in JSON order, ``regions`` the sorted (R,) region
            ids, their ``names``, ``scan_ids``, ``groups`` (array of the scan_groups) and
            the ``atlas`` selection.

        Raises
        ------
        InputError
            If no atlas is selected, a scan's npy does not exist, or it has no sidecar and
            its entry's region list is missing or unusable.
        DamagedFileError
            If a scan's npy is not a 1-D integer array, or its sidecar's region list was
            edited.
        StaleOutputError
            If a scan's region list differs from the first scan's, its npy has not one id
            per streamline of its pkl, or it holds an id outside the numbering.
        """
        labels = self._require_atlas()
        regions0 = None
        mats = None
        for pos, lab in enumerate(labels):
            lab_ids = self._labels_of(pos, lab)
            regions, start = lab_ids.regions, lab_ids.start
            rec = self._scans[pos]
            if regions0 is None:
                regions0 = regions
                n_reg = regions.shape[0]
                mats = np.zeros((len(self._scans), n_reg, n_reg), dtype=np.int32)
            elif not np.array_equal(regions, regions0):
                raise StaleOutputError(
                    f"{rec.where(_field(lab, 'numpy_path'))}: its region list "
                    f"({regions.shape[0]} regions) differs from that of scan "
                    f"{self._scans[0].scan_id!r} ({regions0.shape[0]} regions); connection "
                    f"matrices need one region list (the same graphml)")
            n_pairs = n_reg * (n_reg + 1) // 2
            conn = lab_ids.ids
            if conn.shape[0]:
                lo, hi = int(conn.min()), int(conn.max())
                if lo < 0 or hi >= start + n_pairs:
                    bad = lo if lo < 0 else hi
                    raise StaleOutputError(
                        f"{rec.where(_field(lab, 'numpy_path'))}: file "
                        f"{str(lab.numpy_path)!r} has connection id {bad}, outside "
                        f"0..{start + n_pairs - 1} for {n_reg} regions numbered from {start}")
            mats[pos] = pairs_to_matrix(pair_counts(conn, n_reg, start), n_reg)
            del conn, lab_ids
        first = labels[0]
        return ConnectionMatrices(
            counts=mats, regions=regions0, names=_region_names(first, regions0),
            scan_ids=self.scan_ids, groups=np.array([rec.scan_group for rec in self._scans]),
            atlas=dict(self._atlas[0]))

    def decode(self, connection_ids, scan=0):
        """(region_a, region_b) arrays of connection ids of a scan (selected atlas).

        Id 0 (unlabeled; with numbering base 0 also the first region's self-connection, left
        out as in ``connection_matrices``) and ids outside the numbering give -1.

        Parameters
        ----------
        connection_ids : array_like of int
            Connection ids (any shape; cast to int64).
        scan : int or str, optional
            The scan whose region list and numbering decode them: position or scan_id
            (default 0, the first scan).

        Returns
        -------
        region_a : numpy.ndarray
            Region id (int64) of each pair's first (lower) region, shape of
            ``connection_ids``; -1 where not decoded.
        region_b : numpy.ndarray
            Region id of each pair's second region, likewise.

        Raises
        ------
        InputError
            If no atlas is selected.
        LtpaError
            If the scan's region list cannot be had: its npy's sidecar is damaged, or it has
            none and its entry's region list is missing or unusable.
        IndexError
            If a position is outside the study's scans.
        KeyError
            If no scan has this scan_id.
        """
        labels = self._require_atlas()
        pos = self._position(scan)
        regions, start = self._decoding(pos, labels[pos])
        return decode_regions(connection_ids, regions, start)

    def region_names(self) -> dict:
        """Region id -> name of the selected atlas: the graphml's dn_name / name, or the label
        table's name column, else the id.

        Returns
        -------
        dict
            int region id -> str name, for every region of the first scan's region list.

        Raises
        ------
        InputError
            If no atlas is selected.
        LtpaError
            If the first scan's region list cannot be had: its npy's sidecar is damaged, or
            it has none and its entry's region list is missing or unusable.
        """
        labels = self._require_atlas()
        regions, _ = self._decoding(0, labels[0])
        return dict(zip(regions.tolist(), _region_names(labels[0], regions)))

    def __repr__(self):
        atlas = f", atlas {_describe(self._atlas[0])}" if self._atlas else ""
        return f"TrackDataSource({str(self.json_source)!r}, {len(self)} scans{atlas})"


# --------------------------------------------------------------------------- helpers


def _every(every) -> int:
    every = int(every)
    if every < 0:
        raise InputError(f"every must be >= 0, not {every}")
    return every


def _some(items, n=5) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _field(lab, name) -> str:
    return f"track_labels[{lab.position}].{name}"


def _entry_dict(lab) -> dict:
    entry = {"name": lab.name}
    if isinstance(lab.parameters, dict):
        entry.update(lab.parameters)
    return entry


def _dictmatch(query: dict, lab) -> bool:
    """dsi2's dictmatch: every queried key has the queried value in the entry."""
    entry = _entry_dict(lab)
    return all(key in entry and entry[key] == value for key, value in query.items())


def _describe(query: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in query.items())


def _entry_text(lab) -> str:
    params = lab.parameters if isinstance(lab.parameters, dict) else {}
    inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return f"{lab.name!r} ({inner})" if inner else repr(lab.name)


def _entries(labels) -> str:
    return "; ".join(_entry_text(lab) for lab in labels) if labels else "none"




def _region_names(lab, regions) -> list:
    """Names of ``regions`` from the entry's region list, a graphml or a label table (BIDS
    dseg.tsv included; ``ltpa.formats.regions.region_names``), else the ids."""
    if lab.graphml_path is not None:
        names = region_names(lab.graphml_path, "graphml")
    elif lab.labels_path is not None:
        names = region_names(lab.labels_path, "table")
    else:
        names = {}
    return [names.get(int(r), str(int(r))) for r in regions]
