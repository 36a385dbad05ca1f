"""Quality control of a scan's outputs: one row per atlas, and the study-wide summary.

Everything is computed from the outputs and their ``.json`` sidecars (no hashing
or labeling is redone); the streamline lengths come from the trk when it is on
disk (a labs' archived trk leaves the median empty).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from ..errors import LtpaError
from ..formats.regions import region_names
from ..formats.trk import TrkFile, not_finite
from ..io import atomic_open
from ..kernels import length_range
from ..prepared.connections import pair_counts, regions_reached
from ..progress import progress_logger
from ..study.sidecar import read as _read_sidecar
from .summary import FLAGS, output_notes

log = logging.getLogger("ltpa")

LENGTH_BIN_MM = 2.0  # width of the length histogram's bins

QC_COLUMNS = [
    "scan_id", "atlas", "n_streamlines", "n_unlabeled", "share_unlabeled", "n_regions",
    "region_source", "n_labels_not_in_region_list", "labels_not_in_region_list",
    "n_regions_never_reached", "regions_never_reached", "regions_never_reached_names",
    "n_points",
    "n_points_outside_key_grid", "n_points_outside_atlas_grid", "length_median_mm",
    "flags", "numpy_path",
]


# ---------------------------------------------------------------- connection ids

def _sidecar_or_empty(output) -> dict:
    """A valid sidecar of ``output``, or None with a warning naming why (QC goes on)."""
    body, why = _read_sidecar(output)
    if body is None and why != "it has no sidecar":
        log.warning("%s: %s; its QC values from the sidecar are left empty", output, why)
    return body


class AtlasCounts:
    """The connection counts of one atlas's scans, read from their npys in one pass.

    ``items``: [(scan_id, scan_group, numpy_path)]. Iterating yields, per scan, ``(scan_id,
    scan_group, regions, counts, n_streamlines)``: the region ids of its sidecar (a tuple),
    the streamlines per region pair in ``np.triu_indices`` order (:func:`pair_counts`) and
    the number of ids in the npy (all its streamlines, unlabeled too). A scan whose npy has
    no sidecar with the region list, or ids that do not fit it, is left out with a warning
    and listed in ``left_out``. One scan's ids are in memory at a time. ``starts``: the
    ``connection_ids_start_at`` values read; :meth:`names` the region names of the
    graphmls the sidecars name.
    """

    def __init__(self, items, purpose="the plot"):
        self.items = items
        self.purpose = purpose
        self.left_out = []
        self.starts = set()
        self._lists = {}  # region lists the labelings read: path text -> (path, kind)

    def __iter__(self):
        for scan_id, group, npy in self.items:
            side = _read_sidecar(npy)[0] or {}
            regions = side.get("region_ids")
            if regions is None:
                log.warning("%s: no sidecar with the region list; left out of %s", npy,
                            self.purpose)
                self.left_out.append(scan_id)
                continue
            start = int(side.get("connection_ids_start_at", 1))
            try:
                ids = np.load(npy)
                counts = pair_counts(ids, len(regions), start)
            except (OSError, ValueError) as exc:
                log.warning("%s: left out of %s (%s)", npy, self.purpose, exc)
                self.left_out.append(scan_id)
                continue
            self.starts.add(start)
            found = region_list_of(side, npy)
            if found is not None:
                self._lists.setdefault(str(found[0]), found)
            yield scan_id, group, tuple(int(r) for r in regions), counts, int(ids.shape[0])

    def names(self, regions) -> dict:
        """{region id: name} from the region lists (graphml, label table, BIDS dseg.tsv) read
        so far (ids they do not name are missing).

        "Read so far": the lists named by the sidecars of the scans iterated until now (one
        per atlas, or a few copies). They are read in turn (:func:`region_names`, which
        never raises) until every id of ``regions`` is named or no list is left.

        Parameters
        ----------
        regions : sequence of int
            The region ids to name; reading stops once all of them are named.

        Returns
        -------
        dict
            int region id -> str name, merged over the lists read (the first list that
            names an id wins); {} before any scan whose region list is on disk was iterated.
        """
        names = {}
        for path, kind in self._lists.values():  # one list per atlas, or a few copies
            for rid, name in region_names(path, kind).items():
                names.setdefault(rid, name)
            if all(int(r) in names for r in regions):
                break
        return names


def region_list_of(side: dict, npy):
    """(path, kind) of the region list a labeling read (from its sidecar ``side``): kind
    ``"graphml"`` (``graphml_path``) or ``"table"`` (``labels_path``); None without one.

    Parameters
    ----------
    side : dict
        The labeling's sidecar; its ``inputs`` entries ``graphml_path`` and then
        ``labels_path`` are looked at (each a dict with ``path`` and maybe ``relpath``).
    npy : str or os.PathLike
        The npy the sidecar belongs to: when an entry's ``path`` does not exist, its
        ``relpath`` is taken relative to the npy's folder.

    Returns
    -------
    tuple of (pathlib.Path, str) or None
        The first of those lists whose file exists, with its kind; None when neither
        entry names a file that exists.
    """
    inputs = side.get("inputs") or {}
    for fld, kind in (("graphml_path", "graphml"), ("labels_path", "table")):
        rec = inputs.get(fld)
        if not isinstance(rec, dict) or not rec.get("path"):
            continue
        path = Path(rec["path"])
        if not path.exists() and rec.get("relpath"):
            path = Path(npy).parent / rec["relpath"]
        if path.exists():
            return path, kind
    return None


# ---------------------------------------------------------------- lengths

def streamline_lengths(trk, progress=None) -> np.ndarray:
    """Length in mm (sum of point distances) of every streamline of an open ``TrkFile``.

    Parameters
    ----------
    trk : TrkFile
        The open file; its body is read once (``TrkFile.walk``).
    progress : callable, optional
        Passed to ``TrkFile.walk``: called as ``progress(words_done, total_words)`` after
        each buffer. None (default): no progress.

    Returns
    -------
    numpy.ndarray
        float64 length of each streamline, in file order (0 for one with fewer than two
        points); empty for a file without streamlines.

    Raises
    ------
    DamagedFileError
        If a streamline has a NaN or infinite coordinate (:func:`not_finite`), or as
        ``TrkFile.walk`` for a damaged or truncated body.
    InputError
        As ``TrkFile.walk``, when a read fails with an OSError.
    """
    parts = []

    def measure(r):
        out = np.zeros(r.n, dtype=np.float64)
        bad = length_range(r.words, r.starts, r.counts, r.n, trk.stride, out)
        if bad >= 0:
            raise not_finite(trk.path, r.s0 + bad)
        parts.append(out)

    trk.walk(measure, progress=progress)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def length_histogram(lengths: np.ndarray, width: float = LENGTH_BIN_MM) -> list[dict]:
    """Counts per ``width`` mm bin from 0 to the longest streamline.

    Parameters
    ----------
    lengths : numpy.ndarray
        Streamline lengths in mm (not negative).
    width : float, optional
        Width of a bin in mm; default ``LENGTH_BIN_MM`` (2.0).

    Returns
    -------
    list of dict
        One dict per bin ``i``, from 0 up to the bin of the longest streamline (empty bins
        included): ``length_mm_from`` (``i * width``) and ``length_mm_to``
        (``(i + 1) * width``), both rounded to 6 decimals, and ``count`` (int; a length on
        an edge counts in the upper bin). [] when ``lengths`` is empty.
    """
    if lengths.size == 0:
        return []
    n_bins = int(math.floor(float(lengths.max()) / width)) + 1
    counts = np.bincount(np.floor(lengths / width).astype(np.int64), minlength=n_bins)
    return [{"length_mm_from": round(i * width, 6), "length_mm_to": round((i + 1) * width, 6),
             "count": int(c)} for i, c in enumerate(counts)]


def read_length_histogram(path):
    """(bin width in mm, int64 counts per bin from 0 mm) of a histogram that
    :func:`write_scan_qc` wrote, or None when it is empty (the trk was not on disk).

    Parameters
    ----------
    path : str or os.PathLike
        The histogram TSV, with columns ``length_mm_from``, ``length_mm_to`` and ``count``.

    Returns
    -------
    tuple of (float, numpy.ndarray) or None
        The bin width (of the first row) and the counts: entry ``i`` is the bin from
        ``i * width`` mm; each row goes to the bin of its lower edge (rounded to a whole
        number of widths), counts of one bin are summed and bins without a row are 0.
        None when the file has no header or no rows.

    Raises
    ------
    ValueError
        If the bins are not all of one positive width, or a cell is not a number.
    """
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        rows = [row for row in reader if row]
    if not header or not rows:
        return None
    col = {name: i for i, name in enumerate(header)}
    lo = np.array([float(r[col["length_mm_from"]]) for r in rows])
    hi = np.array([float(r[col["length_mm_to"]]) for r in rows])
    counts = np.array([int(r[col["count"]]) for r in rows], dtype=np.int64)
    width = float(hi[0] - lo[0])
    if width <= 0 or not np.allclose(hi - lo, width):
        raise ValueError(f"{path}: the length bins are not of one width")
    pos = np.rint(lo / width).astype(np.int64)
    out = np.zeros(int(pos.max()) + 1, dtype=np.int64)
    np.add.at(out, pos, counts)
    return width, out


# ---------------------------------------------------------------- outliers

OUTLIER_IQR = 1.5  # Tukey's fences, as the whiskers of the report's box plots


def iqr_fences(values, k: float = OUTLIER_IQR) -> tuple[float, float]:
    """(Q1 - k IQR, Q3 + k IQR) of ``values`` (quartiles: numpy's linear interpolation).

    Parameters
    ----------
    values : array_like of float
        The values (at least one).
    k : float, optional
        How many IQRs the fences lie beyond the quartiles; default ``OUTLIER_IQR`` (1.5,
        Tukey's fences).

    Returns
    -------
    tuple of (float, float)
        The low fence and the high fence.
    """
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def number_or_none(value):
    """A table cell as a float, or None when it is None, empty or NaN.

    Parameters
    ----------
    value : str, number or None
        The cell.

    Returns
    -------
    float or None

    Raises
    ------
    ValueError
        If ``value`` is text that is not a number.
    """
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def unlabeled_outliers(rows) -> list[str]:
    """Per row, ``"high"`` or ``"low"`` when its ``share_unlabeled`` is beyond Tukey's fences
    (1.5 IQR) of the rows of its ``scan_group`` and atlas, else ``""``.

    The report names these scans on the share-unlabeled plot and the study summary lists
    them all (column ``share_unlabeled_outlier``); rows without an atlas or a share are
    never outliers.

    Parameters
    ----------
    rows : list of dict
        Table rows (e.g. :func:`read_tsv`'s); read are ``atlas``, ``scan_group`` (missing or
        empty: the group ``""``) and ``share_unlabeled`` (a number, or text of one).

    Returns
    -------
    list of str
        One per row, in order: ``"high"`` above the high fence, ``"low"`` below the low
        fence, else ``""``. Fences are computed per (atlas, scan_group) (:func:`iqr_fences`).

    Raises
    ------
    ValueError
        If a ``share_unlabeled`` is text that is not a number (:func:`number_or_none`).
    """
    members = {}
    for i, row in enumerate(rows):
        value = number_or_none(row.get("share_unlabeled"))
        if row.get("atlas") and value is not None:
            members.setdefault((row["atlas"], row.get("scan_group") or ""), []).append((i, value))
    out = [""] * len(rows)
    for group in members.values():
        lo, hi = iqr_fences([v for _, v in group])
        for i, v in group:
            out[i] = "high" if v > hi else "low" if v < lo else ""
    return out


# ---------------------------------------------------------------- tables

def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def write_tsv(path, rows: list[dict], columns: list[str], before_rename=None) -> None:
    """Write ``rows`` (dicts) as a tab-separated table, atomically; missing values are empty
    (``before_rename``: see ``ltpa.io.atomic_path``).

    Parameters
    ----------
    path : str or os.PathLike
        The table to write; its folder is created if needed.
    rows : list of dict
        One line each. Cells: None and NaN empty, floats with 6 significant digits
        (``.6g``), lists and tuples joined with commas, anything else as ``str``.
    columns : list of str
        The header row, and the keys taken from each row in this order (other keys of a
        row are not written).
    before_rename : callable, optional
        Called with no arguments after the table is on disk and before it is renamed onto
        ``path``; an exception from it is raised and ``path`` is left as it was.

    Raises
    ------
    LtpaError
        As ``ltpa.io.atomic_open``: the folder cannot be written in, or writing, syncing or
        renaming fails.
    OSError
        If the folder of ``path`` cannot be created.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", before_rename=before_rename) as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([_fmt(row.get(c)) for c in columns])


def read_tsv(path) -> list[dict]:
    """A TSV written by :func:`write_tsv` as a list of dicts of strings.

    Parameters
    ----------
    path : str or os.PathLike
        The TSV; its first row is the header.

    Returns
    -------
    list of dict
        One dict per data row: column name -> cell text (``""`` for an empty cell).
    """
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def scan_qc(scan_id, *, pkl_path=None, atlases=(), trk_file=None, start=1, kept=()):
    """QC rows of one scan (one per atlas) and its streamline lengths (None without the trk).

    ``atlases`` is a list of (atlas key, numpy_path); the npys' sidecars give the
    region list and the labeling's statistics, the pkl's sidecar the points
    outside the key grid.

    A missing or invalid sidecar leaves its values empty (with a warning); a trk that is
    not on disk or cannot be measured (e.g. a .tck) leaves the length median empty, with a
    warning.

    Parameters
    ----------
    scan_id : str
        The scan; written in every row and named in the messages.
    pkl_path : str or os.PathLike, optional
        The scan's pkl: its sidecar's ``build`` gives ``n_points``,
        ``n_points_outside_key_grid`` and (without the trk) ``n_streamlines``, and its
        notes add to the flags. None (default): those are empty.
    atlases : sequence of (str, str or os.PathLike)
        (atlas key, numpy_path) of each labeling; every npy is loaded. Default none.
    trk_file : str or os.PathLike, optional
        The streamline file to measure the lengths from (:func:`streamline_lengths`).
    start : int, optional
        The ``connection_ids_start_at`` used when an npy's sidecar does not give it;
        default 1.
    kept : collection of str, optional
        Paths (as ``str``) of outputs kept while their inputs are gone: a row whose npy or
        pkl is in it is flagged ``archived``.

    Returns
    -------
    rows : list of dict
        One row per atlas, in the order of ``atlases``, keyed by ``QC_COLUMNS`` (a value
        not known is None or left out); without atlases a single row with atlas ``""``.
    lengths : numpy.ndarray or None
        The streamline lengths in mm, None when the trk was not measured.

    Raises
    ------
    ValueError
        If an npy holds an id beyond the pairs of its region list (``regions_reached``), or
        cannot be loaded (``numpy.load``, which may also raise OSError).
    """
    lengths = None
    if trk_file and Path(trk_file).exists():
        try:
            with TrkFile(trk_file) as trk:
                log.info("%s: measuring streamline lengths", trk_file)
                lengths = streamline_lengths(trk, progress=progress_logger("lengths"))
        except LtpaError as exc:  # e.g. a .tck/.trx: the lengths are left out, not the QC
            log.warning("scan %r: cannot measure streamline lengths from %s (%s); the length "
                        "median is left empty", scan_id, trk_file, exc)
    elif trk_file:
        log.warning("scan %r: trk %s is not on disk; the length median is left empty",
                    scan_id, trk_file)
    median = float(np.median(lengths)) if lengths is not None and lengths.size else None
    pkl_build = ((_sidecar_or_empty(pkl_path) or {}).get("build") or {}) if pkl_path else {}
    common = {
        "scan_id": scan_id,
        "n_points": pkl_build.get("n_points"),
        "n_points_outside_key_grid": pkl_build.get("n_points_outside_grid"),
        "length_median_mm": median,
    }
    if lengths is not None:
        common["n_streamlines"] = int(lengths.shape[0])
    elif pkl_build.get("n_streamlines") is not None:
        common["n_streamlines"] = pkl_build["n_streamlines"]
    rows = []
    for atlas, npy in atlases:
        side = _sidecar_or_empty(npy) or {}
        stats = side.get("stats") or {}
        ids = np.load(npy)
        region_ids = side.get("region_ids")
        start_at = int(side.get("connection_ids_start_at", start))
        row = dict(common, atlas=atlas, numpy_path=str(npy), n_streamlines=int(ids.shape[0]))
        unlabeled = int(np.count_nonzero(ids == 0))
        row["n_unlabeled"] = unlabeled
        row["share_unlabeled"] = unlabeled / ids.shape[0] if ids.shape[0] else 0.0
        unknown = stats.get("labels_not_in_region_list")
        row["labels_not_in_region_list"] = unknown
        row["n_labels_not_in_region_list"] = None if unknown is None else len(unknown)
        row["n_points_outside_atlas_grid"] = stats.get("n_points_outside_grid")
        row["region_source"] = stats.get("region_source")
        if region_ids is not None:
            reached = set(regions_reached(ids, region_ids, start_at).tolist())
            never = [int(r) for r in region_ids if int(r) not in reached]
            row["n_regions"] = len(region_ids)
            row["regions_never_reached"] = never
            row["regions_never_reached_names"] = never_reached_names(never, side, npy)
            row["n_regions_never_reached"] = len(never)
        else:
            log.warning("scan %r, atlas %r: %s has no sidecar with the region list; "
                        "regions never reached are left empty", scan_id, atlas, npy)
        if lengths is not None and lengths.shape[0] != ids.shape[0]:
            log.warning("scan %r, atlas %r: the npy has %d ids but the trk %d streamlines",
                        scan_id, atlas, ids.shape[0], lengths.shape[0])
        row["flags"] = _flags(scan_id, atlas, npy, pkl_path, kept)
        rows.append(row)
        log.info("scan %r, atlas %r: %d streamlines, %.1f%% unlabeled, %s regions never reached",
                 scan_id, atlas, row["n_streamlines"], 100 * row["share_unlabeled"],
                 row.get("n_regions_never_reached", "?"))
    if not rows:
        rows.append(dict(common, atlas=""))
    return rows, lengths


NAMES_SEPARATOR = "; "  # region names may hold commas and spaces (a BIDS dseg.tsv's)


def never_reached_names(never: list[int], side: dict, npy) -> str | None:
    """The names of the regions ``never`` reached, in their order, joined with ``"; "``:
    from the region list the labeling read (its sidecar ``side``: a graphml, a label table
    or a BIDS dseg.tsv); a region the list does not name is shown by its id. None (an
    empty cell) when the sidecar names no region list that is on disk.

    Parameters
    ----------
    never : list of int
        The region ids never reached.
    side : dict
        The labeling's sidecar (:func:`region_list_of`).
    npy : str or os.PathLike
        The npy the sidecar belongs to (for a region list given by ``relpath``).

    Returns
    -------
    str or None
        The names joined with ``NAMES_SEPARATOR`` (``""`` when ``never`` is empty; all ids
        when the list cannot be read); None when no region list is found.
    """
    found = region_list_of(side, npy)
    if found is None:
        return None
    names = region_names(*found)
    return NAMES_SEPARATOR.join(names.get(int(r), str(r)) for r in never)


def _flags(scan_id, atlas, npy, pkl_path, kept) -> list[str]:
    """What affects this row's results (ltpa.qc.summary's flags): from the sidecars, and
    ``archived`` when the outputs were kept while their inputs are gone."""
    notes = output_notes(npy, scan_id, atlas)
    if pkl_path:
        notes += output_notes(pkl_path, scan_id)
    flags = {FLAGS.get(n.what, n.what) for n in notes}
    if str(npy) in kept or (pkl_path and str(pkl_path) in kept):
        flags.add("archived")
    return sorted(flags)


def write_scan_qc(scan_id, out_tsv, out_lengths, *, pkl_path=None, atlases=(), trk_file=None,
                  start=1, kept=(), before_rename=None) -> list[dict]:
    """Write the scan's QC table and its length histogram (TSV), each atomically;
    ``before_rename`` (a callable, e.g. a job's input check) is called before each rename.

    Parameters
    ----------
    scan_id : str
        The scan (:func:`scan_qc`).
    out_tsv : str or os.PathLike
        The QC table to write: the columns ``QC_COLUMNS``, one row per atlas.
    out_lengths : str or os.PathLike
        The length histogram to write (:func:`length_histogram`; columns
        ``length_mm_from``, ``length_mm_to``, ``count``); only the header when the trk
        was not measured.
    pkl_path, atlases, trk_file, start : optional
        As in :func:`scan_qc`.
    kept : iterable of str, optional
        As in :func:`scan_qc` (made a set).
    before_rename : callable, optional
        Called with no arguments before each of the two renames (the table first); an
        exception from it is raised and leaves that file, and any not yet written, as it
        was.

    Returns
    -------
    list of dict
        The rows of the QC table (:func:`scan_qc`'s).

    Raises
    ------
    LtpaError
        As :func:`write_tsv`.
    ValueError
        As :func:`scan_qc`.
    """
    rows, lengths = scan_qc(scan_id, pkl_path=pkl_path, atlases=atlases, trk_file=trk_file,
                            start=start, kept=set(kept))
    write_tsv(out_tsv, rows, QC_COLUMNS, before_rename=before_rename)
    hist = length_histogram(lengths) if lengths is not None else []
    write_tsv(out_lengths, hist, ["length_mm_from", "length_mm_to", "count"],
              before_rename=before_rename)
    log.info("wrote %s (%d rows) and %s", out_tsv, len(rows), out_lengths)
    return rows


def flatten(metadata: dict, prefix="") -> dict:
    """{'attributes': {'age': 30}} -> {'attributes.age': 30}; lists joined with commas.

    Lists are joined when the table is written (:func:`write_tsv`): here every value that
    is not a dict is kept as it is.

    Parameters
    ----------
    metadata : dict
        The nested mapping.
    prefix : str, optional
        Put in front of every key (``"key."`` for the nested levels); default ``""``.

    Returns
    -------
    dict
        Dotted key -> value, in the order of ``metadata``; an empty nested dict adds no key.
    """
    out = {}
    for k, v in metadata.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def write_summary(qc_tsvs, out_tsv, scans: list[dict]) -> list[dict]:
    """Join every scan's QC rows with its scan_group and metadata into one table, with
    ``share_unlabeled_outlier`` (:func:`unlabeled_outliers`) after ``share_unlabeled``.

    ``scans``: [{"scan_id", "scan_group", **metadata}] in study order.

    Parameters
    ----------
    qc_tsvs : sequence of str or os.PathLike
        The scans' QC tables (:func:`write_scan_qc`), whose rows are taken in this order.
    out_tsv : str or os.PathLike
        The summary table to write, atomically (:func:`write_tsv`).
    scans : list of dict
        The study's entries; nested metadata is flattened (:func:`flatten`). The columns
        after ``scan_id`` are ``scan_group`` and then every other metadata key, in order of
        first appearance, that is not a QC column; a QC row whose scan is not in ``scans``
        has them empty.

    Returns
    -------
    list of dict
        The rows written: the metadata values, the QC cells (strings) and
        ``share_unlabeled_outlier``.

    Raises
    ------
    LtpaError
        As :func:`write_tsv`.
    ValueError
        If a ``share_unlabeled`` cell is not a number (:func:`unlabeled_outliers`).
    """
    meta = {s["scan_id"]: flatten(s) for s in scans}
    meta_cols = ["scan_group"]
    for m in meta.values():
        for k in m:
            if k not in meta_cols and k not in ("scan_id",) and k not in QC_COLUMNS \
                    and k != "share_unlabeled_outlier":
                meta_cols.append(k)
    rows = []
    for path in qc_tsvs:
        for row in read_tsv(path):
            m = meta.get(row["scan_id"], {})
            rows.append({**{k: m.get(k) for k in meta_cols}, **row})
    for row, side in zip(rows, unlabeled_outliers(rows)):
        row["share_unlabeled_outlier"] = side
    columns = ["scan_id"] + meta_cols
    for c in QC_COLUMNS:
        if c != "scan_id":
            columns.append(c)
        if c == "share_unlabeled":
            columns.append("share_unlabeled_outlier")
    write_tsv(out_tsv, rows, columns)
    log.info("wrote %s: %d rows from %d scans", out_tsv, len(rows), len(qc_tsvs))
    return rows
