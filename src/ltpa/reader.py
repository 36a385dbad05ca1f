"""The prepared data in use: a whole study queried from Python (dsi2's ``TrackDataSource``).

``TrackDataSource(local_data.json)`` reads the study exactly as the workflow does
(``ltpa.study.load_study``: the schema, path resolution, the same staleness verdicts as
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
region list (``ltpa.labels``); id 0 (with ``start = 1``) is a streamline with fewer than two
labeled points.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .errors import LtpaError

__all__ = ["TrackDataSource", "ScanTable", "ScanQuery", "QueryResults", "ConnectionMatrices"]

CORE_COLUMNS = ("scan_id", "scan_group", "subject_id", "study")
# metadata flattened into columns of its own (each attribute), not one column
_NOT_COLUMNS = ("attributes",)
_EMPTY_IDS = np.zeros(0, dtype=np.int32)
_SAVE_CHUNK = 1 << 14  # streamlines per block when writing a subset .trk (~40 MB of work)
_MAX_RUNS = 256  # id ranges gathered as slices (a Python list of at most this many) below it


# --------------------------------------------------------------------------- the scan table


class ScanTable(list):
    """The study's scans, one dict per scan in JSON order, with a ``columns`` list.

    Columns: ``scan_id``, ``scan_group``, ``subject_id``, ``study``, then each key of the
    scan's ``attributes`` (nested objects flattened as ``a.b``; a key that is also a scan
    field is ``attributes.<key>``), then the scan's other metadata (``trk_space``,
    ``software``, ...). A value a scan does not have is ``None``. It is a plain list of
    dicts, so ``pandas.DataFrame(source.scans)`` makes a data frame of it.
    """

    def __init__(self, rows, columns):
        super().__init__(rows)
        self.columns = list(columns)

    def column(self, name) -> list:
        """The values of one column, in scan order."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return [row[name] for row in self]

    def to_tsv(self) -> str:
        lines = ["\t".join(self.columns)]
        for row in self:
            lines.append("\t".join("" if row[c] is None else str(row[c]) for c in self.columns))
        return "\n".join(lines)

    def __repr__(self):
        return f"ScanTable({len(self)} scans; columns {self.columns})"


def scan_table(scans) -> ScanTable:
    """The ``ScanTable`` of a study's ``ScanRecord``s."""
    from .qc import flatten

    flat = []
    attr_keys, other_keys = [], []
    for rec in scans:
        md = rec.metadata
        attrs = {}
        if isinstance(md.get("attributes"), dict):
            attrs = flatten(md["attributes"])
        other = flatten({k: v for k, v in md.items()
                         if k not in CORE_COLUMNS and k not in _NOT_COLUMNS})
        flat.append((rec, attrs, other))
        attr_keys += [k for k in attrs if k not in attr_keys]
        other_keys += [k for k in other if k not in other_keys]
    taken = set(CORE_COLUMNS) | set(other_keys)
    attr_names = {k: (f"attributes.{k}" if k in taken else k) for k in attr_keys}
    columns = list(CORE_COLUMNS) + [attr_names[k] for k in attr_keys] + other_keys
    rows = []
    for rec, attrs, other in flat:
        row = {"scan_id": rec.scan_id, "scan_group": rec.scan_group,
               "subject_id": rec.metadata.get("subject_id"), "study": rec.metadata.get("study")}
        for k in attr_keys:
            row[attr_names[k]] = attrs.get(k)
        for k in other_keys:
            row[k] = other.get(k)
        rows.append(row)
    return ScanTable(rows, columns)


# --------------------------------------------------------------------------- query results


class ScanQuery:
    """One scan's answer to a query: the selected streamlines (dsi2's ``subset``).

    ``scan_id``, ``scan_group``; ``ids``: sorted ids of the selected streamlines (int32,
    positions in the scan's trk and pkl); ``len(q)``; ``tracks``: the streamlines themselves
    (a sequence of (n, 3) float32 arrays in the key grid's voxmm, as ``TrackDataset.tracks``);
    ``connections``: their connection ids under the atlas selected when the query ran;
    ``save(path)``: a TrackVis .trk of them in the key grid (dsi2's ``save``).
    """

    def __init__(self, source, position, ids, label=None):
        self._source = source
        self._position = position
        rec = source._scans[position]
        self.scan_id = rec.scan_id
        self.scan_group = rec.scan_group
        self.ids = ids
        self._label = label

    def __len__(self):
        return int(self.ids.shape[0])

    @property
    def dataset(self):
        """The scan's whole ``TrackDataset`` (opened from its pkl)."""
        return self._source.dataset(self._position)

    @property
    def tracks(self) -> "SelectedStreamlines":
        return SelectedStreamlines(self._source, self._position, self.ids)

    @property
    def connections(self) -> np.ndarray:
        """Connection id of each selected streamline (int64), under the query's atlas."""
        if self._label is None:
            raise LtpaError(f"scan {self.scan_id!r}: no atlas was selected when this query ran; "
                            f"call change_atlas(name, **parameters) first")
        conn = self._source._labels_of(self._position, self._label).ids
        return np.asarray(conn[self.ids], dtype=np.int64)

    def save(self, path) -> Path:
        """Write the selected streamlines to ``path`` as a .trk in the key grid; returns it."""
        ds = self.dataset
        try:
            write_subset_trk(ds, self.ids, path)
        except LtpaError as exc:
            raise exc.in_context(f"scan {self.scan_id!r}") from None
        return Path(path)

    def __repr__(self):
        return f"ScanQuery(scan_id={self.scan_id!r}, {len(self)} streamlines)"


class SelectedStreamlines:
    """The streamlines of a query result, read from the pkl when asked for."""

    def __init__(self, source, position, ids):
        self._source = source
        self._position = position
        self._ids = ids

    def __len__(self):
        return int(self._ids.shape[0])

    def __getitem__(self, i):
        tracks = self._source.dataset(self._position).tracks
        if isinstance(i, slice):
            return [tracks[int(s)] for s in self._ids[i]]
        return tracks[int(self._ids[i])]

    def __iter__(self):
        tracks = self._source.dataset(self._position).tracks
        for s in self._ids.tolist():
            yield tracks[s]


class QueryResults(list):
    """The ``ScanQuery`` of every scan, in JSON order (dsi2 returned a list too)."""

    @property
    def scan_ids(self) -> list:
        return [q.scan_id for q in self]

    @property
    def counts(self) -> np.ndarray:
        """Number of selected streamlines per scan (int64)."""
        return np.array([len(q) for q in self], dtype=np.int64)

    def __repr__(self):
        return f"QueryResults({len(self)} scans, {int(self.counts.sum())} streamlines)"


@dataclass
class ConnectionMatrices:
    """Streamline counts per region pair for every scan (``TrackDataSource.connection_matrices``).

    ``counts[s, i, j]``: streamlines of scan ``s`` whose end regions are ``regions[i]`` and
    ``regions[j]``; symmetric (each streamline counted once, in both ``(i, j)`` and ``(j, i)``,
    and once on the diagonal for ``i == j``); streamlines without two labeled points are not
    counted. ``groups`` is a numpy array of the scans' scan_group, so e.g.
    ``m.counts[m.groups == "patient"].mean(axis=0)``.
    """

    counts: np.ndarray  # (scans, R, R) int32
    regions: np.ndarray  # (R,) int64 region ids (atlas labels), sorted
    names: list  # R region names (graphml dn_name / name when given, else the id)
    scan_ids: list
    groups: np.ndarray
    atlas: dict = field(default_factory=dict)


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
    checkout, with the schema's defaults (``ltpa.config``); ``data_root`` overrides where
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
        from .config import default_config
        from .localdata import problem_text
        from .staleness import MISSING, OUT_OF_DATE
        from .study import load_study
        from .targets import RULE_INDEX, RULE_LABEL

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
        return [rec.scan_id for rec in self._scans]

    @property
    def scans(self) -> ScanTable:
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
        """The ``TrackDataset`` of a scan (position or scan_id), from its pkl."""
        from .dataset import load_track_dataset

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
        ``ltpa.grids.conform_plan``); or a 3-D array of the key grid's shape. Voxels are
        refused when the scans' key grids have different voxel orders (native grids of RAS
        and LPS trks): the same (i, j, k) is another place in each; use a mask or
        ``query_mm``. ``every``: keep every n-th selected streamline (dsi2's, 0 = all).
        """
        return self._query(_Roi.from_input(ijks), every)

    def query_mm(self, points, every=0) -> QueryResults:
        """Per scan, the streamlines through the voxels whose centres are nearest to
        ``points`` (RAS mm, an (N, 3) array or a list of (x, y, z)), placed on each scan's
        key grid by its affine: the same places whatever the scans' voxel orders."""
        return self._query(_Roi.from_mm(points), every)

    def _query(self, roi, every) -> QueryResults:
        every = _every(every)
        label = self._current_label_records()
        out = QueryResults()
        problems = {}
        lin_cache = {}
        orders = {}
        for pos, rec in enumerate(self._scans):
            ds = self.dataset(pos)
            grid = _key_grid(ds)
            orders.setdefault(grid.order(), []).append(rec.scan_id)
            voxels, problem = roi.voxels_on(grid)
            if problem:
                problems.setdefault(problem, []).append(rec.scan_id)
                continue
            if problems:
                continue  # an error is coming: only check the other scans' grids
            key = (grid.dim, grid.affine_key())
            if key not in lin_cache:
                lin_cache[key] = _linear(voxels, grid.dim)
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
        """
        from .localdata import problem_text

        query = {} if name is None else {"name": name}
        query.update(parameters)
        if not query:
            raise LtpaError("change_atlas: give an atlas name and/or parameters, e.g. "
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
            raise LtpaError(f"{str(self.json_source)!r}: change_atlas: no scan has an atlas "
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
            raise LtpaError(f"{str(self.json_source)!r}: no atlas selected: call "
                            f"change_atlas(name, **parameters) first; the study's atlases: "
                            f"{self._atlas_choices()}")
        return self._atlas[1]

    def _decoding(self, pos, lab):
        """(sorted region ids, numbering base) of a scan's npy: its sidecar, else its lists."""
        from . import sidecar
        from .regions import regions_from_graphml, regions_from_table

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
                if lab.graphml_path is not None:
                    regions = regions_from_graphml(lab.graphml_path)
                elif lab.labels_path is not None:
                    regions = regions_from_table(lab.labels_path)
                else:
                    raise LtpaError(
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
            raise LtpaError(f"{where}: file {path!r} does not exist") from None
        except (OSError, ValueError) as exc:
            raise LtpaError(f"{where}: file {path!r} is not a .npy array ({exc})") from None
        if conn.ndim != 1 or conn.dtype.kind not in "iu":
            raise LtpaError(f"{where}: file {path!r} holds a {conn.dtype} array of shape "
                            f"{conn.shape}; expected one integer connection id per streamline")
        n = self.dataset(pos).get_ntracks()
        if conn.shape[0] != n:
            raise LtpaError(f"{where}: file {path!r} has {conn.shape[0]} connection ids but the "
                            f"pkl {str(rec.pkl_path)!r} has {n} streamlines; one of them is out "
                            f"of date (see `ltpa status`)")
        regions, start = self._decoding(pos, lab)
        return _Labels(conn, regions, start)

    def query_connection_id(self, connection_id, every=0) -> QueryResults:
        """Per scan, the streamlines whose connection id (selected atlas) is any of these."""
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
        """
        from .analysis.matrix import study_patterns

        return study_patterns(self, radius, min_tracks=min_tracks, across=across)

    def connection_id(self, region_a, region_b) -> int:
        """The connection id of a pair of regions under the selected atlas.

        A region is its number (atlas label; an int or a string of digits) or its name
        (``region_names()``: the graphml's dn_name / name).
        """
        labels = self._require_atlas()
        from .labels import pair_index

        found = {self._decoding(pos, lab)[1] for pos, lab in enumerate(labels)}
        regions, start = self._decoding(0, labels[0])
        for pos, lab in enumerate(labels):
            r, _ = self._decoding(pos, lab)
            if not np.array_equal(r, regions):
                raise LtpaError(f"scans {self._scans[0].scan_id!r} and "
                                f"{self._scans[pos].scan_id!r} have different region lists: "
                                f"a connection id means a different pair in each")
        if len(found) > 1:
            raise LtpaError("the scans' npys use different numbering bases "
                            "(connection_ids_start_at); a pair has a different id in each")
        idx = []
        for r in (region_a, region_b):
            r = self._region_number(r, regions, labels[0])
            k = int(np.searchsorted(regions, int(r)))
            if k >= regions.shape[0] or regions[k] != int(r):
                raise LtpaError(f"region {r!r} is not in the region list of the selected atlas "
                                f"({regions.shape[0]} regions, {int(regions[0])}.."
                                f"{int(regions[-1])})")
            idx.append(k)
        lo, hi = sorted(idx)
        return int(pair_index(np.array([lo]), np.array([hi]), regions.shape[0])[0]) + start

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
            raise LtpaError(f"region name {text!r} names {len(found)} regions of the selected "
                            f"atlas ({', '.join(map(str, found))}): give the number")
        near = [n for n in names if text.lower() in n.lower()][:5]
        hint = f"; names like it: {', '.join(near)}" if near else ""
        raise LtpaError(f"region {text!r} is not a region name or number of the selected atlas "
                        f"({regions.shape[0]} regions{hint})")

    def connection_matrices(self) -> ConnectionMatrices:
        """A (scans x R x R) int32 array of streamline counts per region pair (selected atlas).

        Every scan must use the same region list (they do when their graphml is the same).
        With ``connection_ids_start_at: 0`` id 0 is both the first region's self-connection
        and "unlabeled" (dsi2's numbering); it is left out of the matrix, as unlabeled.
        """
        from .qc import pair_counts, pairs_to_matrix

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
                raise LtpaError(
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
                    raise LtpaError(
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
        """
        labels = self._require_atlas()
        pos = self._position(scan)
        regions, start = self._decoding(pos, labels[pos])
        ids = np.asarray(connection_ids, dtype=np.int64)
        n_reg = regions.shape[0]
        iu = np.triu_indices(n_reg)
        k = ids - start
        ok = (k >= 0) & (k < iu[0].shape[0]) & (ids != 0)  # 0: unlabeled (as in the matrices)
        kk = np.where(ok, k, 0)
        a = np.where(ok, regions[iu[0][kk]], -1)
        b = np.where(ok, regions[iu[1][kk]], -1)
        return a, b

    def region_names(self) -> dict:
        """Region id -> name of the selected atlas: the graphml's dn_name / name, or the label
        table's name column, else the id."""
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
        raise LtpaError(f"every must be >= 0, not {every}")
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
    dseg.tsv included; ``ltpa.regions.region_names``), else the ids."""
    from .regions import region_names

    if lab.graphml_path is not None:
        names = region_names(lab.graphml_path, "graphml")
    elif lab.labels_path is not None:
        names = region_names(lab.labels_path, "table")
    else:
        names = {}
    return [names.get(int(r), str(int(r))) for r in regions]


@dataclass(frozen=True)
class KeyGrid:
    dim: tuple
    voxel_size: tuple
    affine: np.ndarray | None  # voxel centre -> RAS mm, None when the header has none

    def order(self) -> str:
        """The voxel order of the grid's axes (e.g. 'RAS', 'LPS'); '?' without an affine."""
        if self.affine is None:
            return "?"
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def affine_key(self):
        return None if self.affine is None else tuple(np.round(self.affine, 6).ravel().tolist())

    def text(self) -> str:
        vs = "x".join(f"{v:g}" for v in self.voxel_size)
        aff = "no affine" if self.affine is None else "affine [" + ", ".join(
            "[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in self.affine[:3]) + "]"
        return f"{'x'.join(map(str, self.dim))}, voxel {vs} mm, {aff}"


def _key_grid(ds) -> KeyGrid:
    hdr = ds.header
    aff = np.asarray(hdr["voxel_to_rasmm"], dtype=np.float64).reshape(4, 4)
    return KeyGrid(tuple(int(d) for d in ds.tracks_at_ijk.dim),
                   tuple(float(v) for v in np.asarray(hdr["voxel_sizes"]).reshape(3)),
                   None if not aff[:3, :3].any() else aff)


class _Roi:
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
        if self.points is not None:
            return "mm"
        return "mask" if self.mask_source is not None else "voxels"

    @classmethod
    def from_input(cls, ijks):
        if isinstance(ijks, (str, os.PathLike)):
            return cls._from_image(os.fspath(ijks), os.fspath(ijks))
        if hasattr(ijks, "dataobj") and hasattr(ijks, "affine"):
            return cls._from_image(ijks, "the mask image")
        if isinstance(ijks, np.ndarray) and ijks.ndim == 3:
            return cls(_mask_voxels(ijks, "the mask array"), "the mask array", ijks.shape)
        return cls(_voxel_array(ijks))

    @classmethod
    def from_mm(cls, points):
        try:
            arr = np.asarray(points, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise LtpaError(f"query points must be (x, y, z) triples in mm ({exc})") from None
        if arr.ndim == 1 and arr.shape[0] == 3:
            arr = arr.reshape(1, 3)
        if arr.size == 0:
            arr = np.zeros((0, 3))
        if arr.ndim != 2 or arr.shape[1] != 3 or not np.isfinite(arr).all():
            raise LtpaError(f"query points must be finite (x, y, z) triples in mm; got an "
                            f"array of shape {arr.shape}")
        return cls(np.zeros((0, 3), np.int64), points=arr)

    @classmethod
    def _from_image(cls, img, what):
        import nibabel as nib

        if isinstance(img, str):
            if not os.path.exists(img):
                raise LtpaError(f"mask file {img!r} does not exist")
            try:
                img = nib.load(img)
            except Exception as exc:  # nibabel raises many types for a bad file
                raise LtpaError(f"mask file {what!r} could not be read as an image ({exc})") \
                    from None
            label = f"mask file {what!r}"
        else:
            label = what
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:
            raise LtpaError(f"{label} could not be read ({exc})") from None
        if data.ndim != 3:
            raise LtpaError(f"{label} has {data.ndim} dimensions {data.shape}; expected a 3-D "
                            f"mask in the key grid")
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        return cls(_mask_voxels(data, label), label, tuple(data.shape),
                   np.asarray(img.affine, dtype=np.float64), zooms, data=data)

    def voxels_on(self, grid: KeyGrid):
        """(voxels of the ROI on ``grid``, None), or (None, why it does not fit)."""
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
            from .grids import Grid, conform, conform_plan

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
        """Why the ROI does not fit ``grid`` (a message), or None."""
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
    """``affine`` applied to (N, 3) points."""
    return points @ affine[:3, :3].T + affine[:3, 3]


def _linear(voxels, dim) -> np.ndarray:
    """Sorted unique linear voxel numbers (C order, as the pkl's index)."""
    if voxels.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    lin = np.ravel_multi_index(tuple(voxels.T), dim).astype(np.int64)
    return np.unique(lin)


def _voxel_array(ijks) -> np.ndarray:
    try:
        arr = np.asarray(ijks)
    except (ValueError, TypeError) as exc:
        raise LtpaError(f"query voxels must be (i, j, k) triples of integers ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.ndim == 1 and arr.shape[0] == 3:
        arr = arr.reshape(1, 3)  # one voxel
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise LtpaError(f"query voxels must be (i, j, k) triples of integers; got an array of "
                        f"shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            row = arr[np.flatnonzero(bad.any(axis=1))[0]]
            raise LtpaError(f"query voxel {tuple(row.tolist())} is not three integers")
        if np.abs(arr).max() > 2**40:
            raise LtpaError("query voxels far outside any key grid")
        return arr.astype(np.int64)
    raise LtpaError(f"query voxels must be (i, j, k) triples of integers; got {arr.dtype} "
                    f"values")


def _mask_voxels(data, label) -> np.ndarray:
    if data.dtype.kind not in "biuf":
        raise LtpaError(f"{label} has data type {data.dtype}; expected a numeric mask")
    nonzero = data != 0
    if data.dtype.kind == "f":
        nonzero &= np.isfinite(data)
    return np.argwhere(nonzero).astype(np.int64)


def ids_at(index, lin: np.ndarray, n_tracks: int) -> np.ndarray:
    """Sorted unique ids (int32) of the streamlines through the voxels ``lin`` of a VoxelIndex.

    ``lin``: sorted unique linear voxel numbers. One ``searchsorted`` for every voxel at once;
    the matching id ranges are gathered either as slices of runs of consecutive index voxels
    (a box ROI is a few runs along k, whose ids lie end to end in the index: plain copies)
    when there are at most ``_MAX_RUNS`` runs, or else through one index array made with
    ``repeat``/``arange`` (no loop over voxels either way); then a bitmap over the scan's
    streamlines (many ids) or ``np.unique`` (few) makes the sorted union.
    """
    voxels = index.voxels
    if lin.shape[0] == 0 or voxels.shape[0] == 0:
        return _EMPTY_IDS
    pos = np.searchsorted(voxels, lin)
    pos = np.minimum(pos, voxels.shape[0] - 1)
    pos = pos[voxels[pos] == lin]
    if pos.shape[0] == 0:
        return _EMPTY_IDS
    indptr, ids = index.indptr, index.ids
    breaks = np.flatnonzero(np.diff(pos) != 1)
    if breaks.shape[0] < _MAX_RUNS:
        first = np.concatenate([pos[:1], pos[breaks + 1]])
        last = np.concatenate([pos[breaks], pos[-1:]])
        bounds = zip(indptr[first].tolist(), indptr[last + 1].tolist())
        got = np.concatenate([ids[a:b] for a, b in bounds])
    else:
        lo = np.asarray(indptr[pos], dtype=np.int64)
        size = np.asarray(indptr[pos + 1], dtype=np.int64) - lo
        # id k of the gather comes from voxel v's range: lo[v] + (k - first k of v)
        take = np.repeat(lo - (np.cumsum(size) - size), size)
        take += np.arange(take.shape[0], dtype=np.int64)
        got = ids[take]
        del take
    if got.shape[0] == 0:
        return _EMPTY_IDS
    if got.shape[0] * 8 >= n_tracks:
        seen = np.zeros(n_tracks, dtype=bool)
        seen[got] = True
        return np.flatnonzero(seen).astype(np.int32)
    return np.unique(got).astype(np.int32, copy=False)


def release_pages(ds) -> None:
    """Unmap the pages of a dataset's pkl that this process touched (they stay in the page
    cache; ``ltpa.io.release_pages``)."""
    io.release_pages(ds.tracks_at_ijk.ids)


def write_subset_trk(ds, ids, path) -> None:
    """Write streamlines ``ids`` of dataset ``ds`` to ``path`` as a TrackVis .trk (key grid).

    The header is the pkl's key-grid header with the new count (no scalars or properties);
    the points are those ``ds.tracks`` gives (key-grid voxmm, float32), gathered in blocks.
    """
    from nibabel.streamlines.trk import header_2_dtype

    from .io import atomic_open

    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n_tracks = ds.get_ntracks()
    if ids.size and (ids.min() < 0 or ids.max() >= n_tracks):
        raise LtpaError(f"streamline ids outside 0..{n_tracks - 1}")
    tracks = ds.tracks  # checks the body's layout once
    words, starts, counts = tracks._words, tracks._starts, tracks._counts
    stride = tracks._stride
    sign = tracks._sign.astype(np.float32)
    shift = tracks._shift.astype(np.float32)
    hdr = np.asarray(ds.header).astype(header_2_dtype.newbyteorder("<")).copy()
    hdr["nb_streamlines"] = ids.shape[0]
    hdr["nb_scalars_per_point"] = 0
    hdr["nb_properties_per_streamline"] = 0
    hdr["scalar_name"] = b""
    hdr["property_name"] = b""
    hdr["hdr_size"] = 1000
    with atomic_open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        for lo in range(0, ids.shape[0], _SAVE_CHUNK):
            sel = ids[lo:lo + _SAVE_CHUNK]
            n = np.asarray(counts[sel], dtype=np.int64)
            first = np.asarray(starts[sel], dtype=np.int64)
            n_pts = int(n.sum())
            before = np.cumsum(n) - n  # points of the block before each streamline
            within = np.arange(n_pts, dtype=np.int64) - np.repeat(before, n)
            word = np.repeat(first, n) + within * stride
            with np.errstate(over="ignore", invalid="ignore"):
                xyz = words[word[:, None] + np.arange(3)].astype(np.float32) * sign + shift
            out = np.empty(sel.shape[0] + 3 * n_pts, dtype=np.float32)
            rec = np.arange(sel.shape[0], dtype=np.int64) + 3 * before
            out.view(np.int32)[rec] = n.astype(np.int32)
            where = np.repeat(rec + 1, n) + 3 * within
            for axis in range(3):
                out[where + axis] = xyz[:, axis]
            if not np.little_endian:
                out = out.byteswap()
            fh.write(memoryview(out).cast("B"))


# --------------------------------------------------------------------------- the command line


def parse_param(text: str):
    """``name=value`` of ``ltpa query --param``: the value as JSON if it is one (33), else text."""
    if "=" not in text:
        raise LtpaError(f"--param {text!r}: expected NAME=VALUE, e.g. scale=33")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise LtpaError(f"--param {text!r}: the name is empty")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, (dict, list)):
        parsed = value
    return key, parsed


def parse_mm(text: str) -> tuple:
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        out = tuple(float(p) for p in parts)
        if not all(np.isfinite(out)):
            raise ValueError
        return out
    except ValueError:
        raise LtpaError(f"--mm {text!r}: expected three numbers X,Y,Z (RAS mm)") from None


def parse_ijk(text: str) -> tuple:
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        return tuple(int(p) for p in parts)
    except ValueError:
        raise LtpaError(f"--ijk {text!r}: expected three integers I,J,K") from None


def query_table(source, results, top=5) -> str:
    """The TSV of ``ltpa query``: one row per scan."""
    atlas = source.atlas is not None
    header = ["scan_id", "scan_group", "n_streamlines"]
    if atlas:
        header += ["n_labeled", "top_connections"]
        names = source.region_names()
    lines = ["\t".join(header)]
    for pos, q in enumerate(results):
        row = [q.scan_id, str(q.scan_group), str(len(q))]
        if atlas:
            conn = q.connections
            ids, counts = np.unique(conn, return_counts=True)
            a, b = source.decode(ids, pos)
            keep = a >= 0
            ids, counts, a, b = ids[keep], counts[keep], a[keep], b[keep]
            order = np.lexsort((ids, -counts))[:max(int(top), 0)]
            row.append(str(int(counts.sum())))
            row.append("; ".join(
                f"{names.get(int(a[k]), a[k])} -- {names.get(int(b[k]), b[k])}: {int(counts[k])}"
                for k in order))
        lines.append("\t".join(row))
    return "\n".join(lines)
