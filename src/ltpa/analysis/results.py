"""What a query gives back: the scan table, each scan's selected streamlines, the results of
every scan, connection matrices; and the subset .trk a selection is saved as."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LtpaError
from ..formats.trkwrite import records, subset_header
from ..io import atomic_open
from ..qc.tables import flatten

CORE_COLUMNS = ("scan_id", "scan_group", "subject_id", "study")
# metadata flattened into columns of its own (each attribute), not one column
_NOT_COLUMNS = ("attributes",)
_SAVE_CHUNK = 1 << 14  # streamlines per block when writing a subset .trk (~40 MB of work)


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
        """The values of one column, in scan order.

        Parameters
        ----------
        name : str
            The column's name, one of ``columns``.

        Returns
        -------
        list
            The value of each scan's row (None where the scan has none).

        Raises
        ------
        KeyError
            If ``name`` is not a column; the message lists the columns.
        """
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return [row[name] for row in self]

    def to_tsv(self) -> str:
        """The table as tab-separated text: the columns' line, then one line per scan.

        None is an empty field; other values are written with ``str`` as they are; the
        text has no final newline.

        Returns
        -------
        str
            The header line (``columns``), then one line per scan, tab-separated.
        """
        lines = ["\t".join(self.columns)]
        for row in self:
            lines.append("\t".join("" if row[c] is None else str(row[c]) for c in self.columns))
        return "\n".join(lines)

    def __repr__(self):
        return f"ScanTable({len(self)} scans; columns {self.columns})"


def scan_table(scans) -> ScanTable:
    """The ``ScanTable`` of a study's ``ScanRecord``s.

    Parameters
    ----------
    scans : list of ltpa.study.localdata.ScanRecord
        The scans, in JSON order; their ``scan_id``, ``scan_group`` and ``metadata`` (its
        ``attributes`` and other keys flattened, ``ltpa.qc.tables.flatten``) fill the rows.

    Returns
    -------
    ScanTable
        One row per scan, in order; the columns as the class describes them (the keys in
        order of first appearance across the scans).
    """
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
        """The selected streamlines, read from the scan's pkl when indexed or iterated."""
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
        """Write the selected streamlines to ``path`` as a .trk in the key grid; returns it.

        Parameters
        ----------
        path : str or os.PathLike
            The .trk to write (atomically; an existing file is replaced).

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        LtpaError
            If the scan's pkl cannot be opened (``TrackDataSource.dataset``); or, with
            ``scan '<scan_id>'`` in front of the message, if its body is damaged or the file
            cannot be written (``write_subset_trk``).
        """
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
        """The scan_id of each result, in order."""
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


def write_subset_trk(ds, ids, path) -> None:
    """Write streamlines ``ids`` of dataset ``ds`` to ``path`` as a TrackVis .trk (key grid).

    The header is the pkl's key-grid header with the new count (no scalars or properties);
    the points are those ``ds.tracks`` gives (key-grid voxmm, float32), gathered in blocks.

    Parameters
    ----------
    ds : ltpa.dataset.TrackDataset
        The scan's dataset (its pkl).
    ids : array_like
        Streamline ids (positions in the scan's trk and pkl; flattened, cast to int64);
        written in the order given, a repeated id again.
    path : str or os.PathLike
        The .trk to write, atomically (``ltpa.io.atomic_open``).

    Raises
    ------
    LtpaError
        If an id is outside ``0 .. ds.get_ntracks() - 1``, or the file cannot be written.
    DamagedFileError
        If a streamline of the dataset runs past its stored body (``TrackDataset.tracks``).
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n_tracks = ds.get_ntracks()
    if ids.size and (ids.min() < 0 or ids.max() >= n_tracks):
        raise LtpaError(f"streamline ids outside 0..{n_tracks - 1}")
    tracks = ds.tracks  # checks the body's layout once
    with atomic_open(path, "wb") as fh:
        fh.write(subset_header(ds.header, ids.shape[0]).tobytes())
        for lo in range(0, ids.shape[0], _SAVE_CHUNK):
            points, counts = tracks.take(ids[lo:lo + _SAVE_CHUNK])
            fh.write(memoryview(records(points, counts)).cast("B"))
