"""Study maps in the workflow: the config's ``maps``, one job per map, its staleness.

Each item of the config option ``maps`` (its fields and their defaults: the config schema)
becomes one ``MapJob``: the output ``<results_dir>/maps/<name>.nii.gz``, the files it reads
(every scan's pkl and, for the map's atlas, npy and pattern file) and the parameters that
decide its content. ``build_map`` runs it: ``ltpa.analysis.maps.write_map`` writes the map
(and its extra maps: ``p_fwe``, ``within_subject`` / ``between_subject``), then this module
adds the top centers (``top_centers``: ijk, mm, value, the connections that drive them,
named) and writes ``<map>.json`` as an ``ltpa.study.sidecar`` of kind ``study_map``, so that
``ltpa.study.staleness.judge`` decides whether a map is up to date as it does for every other
output: from the study's files only (inputs' sizes and times, the parameters).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, LtpaError
from ..io import atomic_open
from ..prepared.patterns import patterns_path
from ..study import sidecar
from ..study.config import schema
from ..study.staleness import judge
from ..study.status import MapEntry

STAT_GROUP_DIFFERENCE = "group_difference"
# options of run_ltpa's built-in statistics that a map item passes on when set
STAT_OPTIONS = ("connection", "groups", "min_scans", "n_permutations", "seed")
N_TOP = 10  # centers in a map's table of top centers
N_DRIVERS = 3  # connections named per top center
# ranked among the centers that at least half of the scans reach (see build_map)
SIMILARITY_STATS = ("similarity", "within_subject", "between_subject")


def item_schema() -> dict:
    """The config schema of one item of ``maps`` (its properties and their defaults), read
    from the schema file (once: ``ltpa.study.config.schema`` caches it).

    Returns
    -------
    dict
        The JSON Schema of an item: its fields under ``properties``, each with its
        ``default`` where it has one. Part of the cached schema: callers must not change it.
    """
    return schema()["properties"]["maps"]["items"]


def map_items(config: dict) -> list[dict]:
    """The config's maps, each with the schema's defaults; LtpaError for a repeated name.

    Parameters
    ----------
    config : dict
        The workflow config (valid under the schema); its ``maps`` list is read, not
        changed.

    Returns
    -------
    list of dict
        One dict per item, in order: the schema's default for every field the item leaves
        out, and ``atlas`` as ``{"name": ..., "parameters": dict}`` (``{}`` when it gives
        none).

    Raises
    ------
    InputError
        If two items have the same ``name`` (the second one is named).
    """
    props = item_schema()["properties"]
    out, seen = [], set()
    for pos, item in enumerate(config["maps"]):
        full = {k: p["default"] for k, p in props.items() if "default" in p}
        full.update(item)
        full["atlas"] = {"name": item["atlas"]["name"],
                         "parameters": dict(item["atlas"].get("parameters") or {})}
        if full["name"] in seen:
            raise InputError(f"config maps[{pos}].name {full['name']!r}: another map has this "
                             f"name (each map is the file maps/<name>.nii.gz)")
        seen.add(full["name"])
        out.append(full)
    return out


def atlas_query(item: dict) -> dict:
    """The track_labels selection of a map item, as ``TrackDataSource.change_atlas`` takes it.

    Parameters
    ----------
    item : dict
        A map item as ``map_items`` gives it (``atlas`` with ``name`` and ``parameters``).

    Returns
    -------
    dict
        ``{"name": <atlas name>, **<atlas parameters>}``.
    """
    return {"name": item["atlas"]["name"], **item["atlas"]["parameters"]}


@dataclass(frozen=True)
class MapJob:
    """One study map: what to make, from which files, with which parameters."""

    name: str
    output: str  # absolute path of the .nii.gz
    local_data: str
    item: dict  # the config's map item, with its defaults
    inputs: dict = field(default_factory=dict)  # field -> absolute path
    scan_ids: tuple = ()
    scan_groups: tuple = ()
    subject_ids: tuple = ()

    def params(self) -> dict:
        """Everything besides the input files that decides the map.

        Returns
        -------
        dict
            ``{"map": <the item without its name>, "scan_ids": list, "scan_groups": list,
            "subject_ids": list}``: the ``params`` of the map's sidecar.
        """
        return {"map": {k: v for k, v in self.item.items() if k != "name"},
                "scan_ids": list(self.scan_ids), "scan_groups": list(self.scan_groups),
                "subject_ids": list(self.subject_ids)}

    def where(self) -> str:
        """How messages name the job: ``config map '<name>'``.

        Returns
        -------
        str
            ``config map`` and the map's name as a Python repr.
        """
        return f"config map {self.name!r}"

    def to_json(self) -> str:
        """The job as compact JSON text (what the workflow hands the map script).

        Returns
        -------
        str
            A JSON object of every field (tuples as lists), without spaces; ``from_json``
            reads it back.
        """
        return json.dumps({"name": self.name, "output": self.output,
                           "local_data": self.local_data, "item": self.item,
                           "inputs": self.inputs, "scan_ids": list(self.scan_ids),
                           "scan_groups": list(self.scan_groups),
                           "subject_ids": list(self.subject_ids)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "MapJob":
        """The job written by ``to_json``.

        Parameters
        ----------
        text : str
            ``to_json``'s text.

        Returns
        -------
        MapJob
        """
        d = json.loads(text)
        return cls(d["name"], d["output"], d["local_data"], d["item"], d["inputs"],
                   tuple(d["scan_ids"]), tuple(d["scan_groups"]), tuple(d["subject_ids"]))


def map_output(work_dir, name) -> str:
    """The output of the map ``name``.

    Parameters
    ----------
    work_dir : str or os.PathLike
        The study's results folder (``Study.work_dir``).
    name : str
        The map item's name.

    Returns
    -------
    str
        The absolute path ``<work_dir>/maps/<name>.nii.gz``.
    """
    return os.path.join(os.path.abspath(work_dir), "maps", f"{name}.nii.gz")


def map_jobs(study, patterns_of=None) -> list[MapJob]:
    """The study's map jobs (``study``: ``ltpa.study.study.Study`` with its config).

    ``patterns_of(label_record, radius)``: the pattern file the workflow builds for a scan's
    atlas at a radius, or None; such files are inputs of the map (read instead of computed).
    Every problem a map's items can show before any job (no or several atlases matching in
    a scan, unknown groups, a statistic's missing options) is one LtpaError listing them all.

    Parameters
    ----------
    study : ltpa.study.study.Study
        The loaded study: its config's ``maps``, its scans, its path and ``work_dir``.
    patterns_of : callable, optional
        ``patterns_of(label_record, radius)`` -> path (str or os.PathLike) or None, as
        above. None (default): no pattern file is an input.

    Returns
    -------
    list of MapJob
        One job per item of ``maps``, in order. Its ``inputs``: ``<scan_id>.pkl_path``,
        ``<scan_id>.numpy_path`` (the matching atlas entry's npy) and, when
        ``patterns_of`` gives one, ``<scan_id>.patterns`` for every scan; ``centers`` (the
        absolute path) when the item gives a centers file.

    Raises
    ------
    InputError
        If two items have the same name (``map_items``); or, listing every problem of every
        item: a scan with no or several ``track_labels`` entries matching the item's atlas,
        a scan without ``pkl_path``, a centers file that does not exist, a
        ``group_difference`` without ``connection`` or ``groups`` or with a group of fewer
        than 2 scans, or an option of ``group_difference`` set for another statistic.
    """
    # the reader (nibabel, numba: ~0.4 s) only when the config has maps: the workflow
    # imports this module at every start
    from .reader import _dictmatch, _entry_text

    items = map_items(study.config)
    jobs, problems = [], []
    groups = [str(s.scan_group) for s in study.scans]
    subjects = [str(s.metadata.get("subject_id", "")) for s in study.scans]
    for pos, item in enumerate(items):
        where = f"config maps[{pos}] ({item['name']!r})"
        query = atlas_query(item)
        inputs = {}
        for rec in study.scans:
            found = [lab for lab in rec.labels if _dictmatch(query, lab)]
            if len(found) != 1:
                what = "no track_labels entry" if not found else f"{len(found)} entries"
                choices = ", ".join(_entry_text(lab) for lab in rec.labels) or "none"
                problems.append(f"{where}: atlas {_query_text(query)}: {what} of "
                                f"{rec.where('track_labels')} matches (its entries: {choices})")
                continue
            inputs[f"{rec.scan_id}.pkl_path"] = str(rec.pkl_path) if rec.pkl_path else None
            inputs[f"{rec.scan_id}.numpy_path"] = str(found[0].numpy_path)
            pat = patterns_of(found[0], item["radius"]) if patterns_of else None
            if pat is not None:
                inputs[f"{rec.scan_id}.patterns"] = str(pat)
            if rec.pkl_path is None:
                problems.append(f"{where}: {rec.where('pkl_path')} is not given; a map needs "
                                f"every scan's pkl")
        if item["centers"] is not None:
            inputs["centers"] = os.path.abspath(item["centers"])
            if not os.path.exists(inputs["centers"]):
                problems.append(f"{where}: centers {item['centers']!r}: no such file")
        problems += _stat_problems(where, item, groups)
        jobs.append(MapJob(item["name"], map_output(study.work_dir, item["name"]),
                           str(study.path), item, inputs,
                           tuple(s.scan_id for s in study.scans), tuple(groups),
                           tuple(subjects)))
    if problems:
        raise InputError("the config's maps cannot be made:\n  " + "\n  ".join(problems))
    return jobs


def study_map_jobs(study) -> list[MapJob]:
    """``map_jobs`` with the pattern files the study's own targets build as inputs: what
    the workflow runs and ``ltpa status`` judges.

    Parameters
    ----------
    study : ltpa.study.study.Study
        The loaded study; a scan's pattern file (``patterns_path`` of its npy at the item's
        radius) is an input when it is the output of one of ``study.targets``.

    Returns
    -------
    list of MapJob
        One job per item of the config's ``maps``, in order.

    Raises
    ------
    InputError
        As ``map_jobs``: every problem of the config's map items.
    """
    produced = {str(t.output) for t in study.targets}

    def patterns_of(label, radius):
        path = str(patterns_path(label.numpy_path, radius))
        return path if path in produced else None

    return map_jobs(study, patterns_of)


def map_status(study) -> list[MapEntry]:
    """One ``ltpa.study.status.MapEntry`` per map of the study's config, judged as the
    workflow judges it (the map's sidecar against its inputs and fields now).

    Parameters
    ----------
    study : ltpa.study.study.Study
        The loaded study, with its ``specs`` (the jobs whose outputs a map reads).

    Returns
    -------
    list of ltpa.study.status.MapEntry
        Per item of ``maps``, in order: its name, output path, status and reason.

    Raises
    ------
    InputError
        As ``map_jobs``: every problem of the config's map items.
    """
    jobs = study_map_jobs(study)
    verdicts = map_verdicts(jobs, study.specs.values())
    return [MapEntry(j.name, j.output, v.status, v.reason) for j, v in zip(jobs, verdicts)]


def _query_text(query: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in query.items())


def _stat_problems(where, item, groups) -> list:
    out = []
    if item["stat"] == STAT_GROUP_DIFFERENCE:
        if item["connection"] is None:
            out.append(f"{where}: stat group_difference needs a connection (an id or a "
                       f"pair of region names)")
        if item["groups"] is None:
            out.append(f"{where}: stat group_difference needs groups: [A, B]")
        else:
            for g in item["groups"]:
                n = groups.count(str(g))
                if n < 2:
                    known = ", ".join(sorted(set(groups)))
                    out.append(f"{where}: group {g!r} has {n} scans, a group needs 2 or more "
                               f"(the study's scan_groups: {known})")
    else:
        for opt in STAT_OPTIONS:
            default = item_schema()["properties"][opt].get("default")
            if item[opt] != default:
                out.append(f"{where}: {opt} is an option of group_difference, not of "
                           f"stat {item['stat']!r}")
    return out


def map_verdicts(jobs, specs=()) -> list:
    """The staleness verdict on each map (``ltpa.study.staleness``): its sidecar against the
    inputs and parameters now; ``specs``: the study's other job specs (a map whose pkl or
    npy needs work is out of date too).

    Parameters
    ----------
    jobs : list of MapJob
        The maps to judge.
    specs : iterable of ltpa.study.spec.JobSpec, optional
        The study's other jobs (default none: every input is judged by its file only).

    Returns
    -------
    list of ltpa.study.staleness.Verdict
        One verdict per job, in order.
    """
    produced = {s.output: s for s in specs}
    produced.update({j.output: j for j in jobs})
    verdicts: dict = {}
    return [judge(j, produced, verdicts) for j in jobs]


# --------------------------------------------------------------------------- the job


def build_map(job: MapJob, config: dict) -> dict:
    """Make the map of ``job``, its extra maps and its sidecar (with the top centers).

    One ``StudyPatterns`` serves the statistic and the top centers' connections: the
    pattern files the workflow built, or (with a warning) patterns computed in memory.
    Each file is written atomically once everything is computed, the sidecar last.
    Returns ``{"map": path, <extra map>: path, ..., "json": sidecar path}``.

    Parameters
    ----------
    job : MapJob
        The map to make (``map_jobs``); its inputs are recorded in the sidecar as they are
        before anything is read.
    config : dict
        The workflow config the study is read with (``TrackDataSource``).

    Returns
    -------
    dict
        ``"map"``: the map's path; one entry per extra map (e.g. ``"p_fwe"``): its path;
        ``"json"``: the sidecar's path; each a ``pathlib.Path``.

    Raises
    ------
    InputError
        If an input file of the job does not exist.
    LtpaError
        If the study, its atlas or its patterns cannot be read, the item's ``connection``
        is not a pair of the atlas (message prefixed with the job and the connection), the
        statistic fails, or a file cannot be written.
    """
    import logging
    import warnings

    # the map's modules (nibabel, numba: ~0.4 s) only in the map's job, not at every start
    # of the workflow, which imports this module
    from .maps import extra_map_path, save_maps
    from .reader import TrackDataSource
    from .run import run_ltpa

    log = logging.getLogger("ltpa")
    folder = os.path.dirname(job.output)
    os.makedirs(folder, exist_ok=True)
    # the inputs as they are before anything is read: a file that changes during the run
    # leaves a sidecar that describes the old one, so the next run rebuilds the map
    records = {}
    for fld, path in job.inputs.items():
        if path is None:
            continue
        try:
            records[fld] = sidecar.file_record(path, folder)
        except FileNotFoundError:
            raise InputError(f"{job.where()}: input {fld} {path!r} does not exist") from None
    item = job.item
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = TrackDataSource(job.local_data, config=config)
        source.change_atlas(**atlas_query(item))
        sp = source.termination_patterns(item["radius"])
    notes = [str(w.message) for w in caught]
    for text in notes:
        log.warning("%s", text)
    options = {}
    if item["stat"] == STAT_GROUP_DIFFERENCE:
        c = item["connection"]
        try:
            options["connection"] = int(c) if isinstance(c, int) else source.connection_id(*c)
        except LtpaError as exc:
            raise exc.in_context(f"{job.where()}, connection {c!r}") from None
        options["groups"] = tuple(item["groups"])
        options.update({k: item[k] for k in ("min_scans", "n_permutations", "seed")
                        if item[k] is not None})
    result = run_ltpa(item["stat"], sp, radius=item["radius"], centers=item["centers"],
                      min_tracks=item["min_tracks"], **options)
    extra = {name: str(extra_map_path(job.output, name)) for name in result.maps
             if name != result.stat}
    eligible = None
    if item["stat"] in SIMILARITY_STATS:
        # a similarity of two scans' single streamlines is 1: rank only centers that most
        # scans reach
        cov = run_ltpa("coverage", sp, radius=item["radius"], centers=item["centers"],
                       min_tracks=item["min_tracks"])
        assert np.array_equal(cov.centers, result.centers)
        eligible = np.asarray(cov.values) >= -(-len(sp.scan_ids) // 2)
    top = top_centers(result, sp, item, eligible=eligible)
    written = save_maps(result, job.output, extra)
    sidecar.write(job.output, "study_map", inputs=records, params=job.params(),
                  atlas=atlas_query(item), name=job.name, stat=result.stat,
                  radius=result.radius, n_centers=len(result), meta=result.meta,
                  extra_map_files={k: os.path.basename(v) for k, v in extra.items()},
                  top_centers=top, notes=notes)
    written["json"] = sidecar.path_of(job.output)
    log.info("map %r: %d centers, %s", job.name, len(result), _summary(result))
    return written


def _summary(result) -> str:
    v = np.asarray(result.values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if not ok.size:
        return "no finite value"
    text = f"{ok.size} finite, {ok.min():.4g} .. {ok.max():.4g}"
    p = result.maps.get("p_fwe")
    if p is not None:
        p = np.asarray(p, dtype=np.float64)
        text += f", {int(np.count_nonzero(p <= 0.05))} centers with p_fwe <= 0.05"
    return text


def ranked(values: np.ndarray, stat: str, n: int = N_TOP, eligible=None) -> np.ndarray:
    """Positions of the ``n`` top values (finite, and ``eligible`` when given): largest |t|
    for a group difference, largest value otherwise; ties by position.

    Parameters
    ----------
    values : array_like
        (N,) values of the map at its centers (cast to float64).
    stat : str
        The map's statistic; ``"group_difference"`` ranks by absolute value.
    n : int, optional
        How many positions at most (default ``N_TOP``).
    eligible : array_like of bool, optional
        (N,) which centers may be ranked; None (default): every center.

    Returns
    -------
    numpy.ndarray
        1-D integer array of at most ``n`` positions into ``values``, best first; fewer when
        fewer values are finite and eligible.
    """
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if eligible is not None:
        keep &= np.asarray(eligible, dtype=bool)
    ok = np.flatnonzero(keep)
    key = np.abs(values[ok]) if stat == STAT_GROUP_DIFFERENCE else values[ok]
    order = np.lexsort((ok, -key))  # descending key, then ascending position
    return ok[order[:n]]


def top_centers(result, sp, item: dict, n: int = N_TOP, eligible=None) -> list[dict]:
    """The map's ``n`` top centers (among ``eligible`` ones, when given): ijk, mm (the key
    grid's affine), value, the other maps' values there (p_fwe, ...), and the connections
    that drive each: for a group difference the tested connection with each group's mean
    count; otherwise the ``N_DRIVERS`` connections (ids not 0) with the most streamlines per
    scan in the center's sphere.

    Parameters
    ----------
    result : ltpa.analysis.run.LtpaResult
        The map (``run_ltpa``): its centers, values, other maps, affine and, for a group
        difference, ``meta["options"]["connection"]``.
    sp : ltpa.analysis.matrix.StudyPatterns
        The patterns the map was computed from (the drivers are read from them).
    item : dict
        The map item (``map_items``): its ``stat``, ``min_tracks`` and ``groups``.
    n : int, optional
        How many centers at most (default ``N_TOP``).
    eligible : array_like of bool, optional
        Which centers may be ranked (``ranked``); None (default): every center.

    Returns
    -------
    list of dict
        One dict per center, best first: ``"ijk"`` (3 ints), ``"mm"`` (3 floats rounded to
        2 decimals, or None when the result has no affine), ``"value"`` (float), the value
        of each other map under its name (float), and ``"drivers"``: a list of dicts with
        ``"connection_id"``, ``"name"`` (``"a -- b"``) and either ``"mean_by_group"``
        (group -> mean count, rounded to 3 decimals; group difference) or
        ``"mean_streamlines"`` (mean streamlines per scan, rounded to 3 decimals).
    """
    pos = ranked(result.values, item["stat"], n, eligible)
    affine = None if result.affine is None else np.asarray(result.affine, dtype=np.float64)
    groups = np.array([str(g) for g in sp.scan_groups])
    conn = result.meta.get("options", {}).get("connection") \
        if item["stat"] == STAT_GROUP_DIFFERENCE else None
    rows = []
    for p in pos:
        v = result.centers[p]
        pm = sp.at_ijk(tuple(int(x) for x in v), min_tracks=item["min_tracks"])
        counts = np.asarray(pm.counts, dtype=np.float64)
        ids = np.asarray(pm.connection_ids, dtype=np.int64)
        row = {"ijk": [int(x) for x in v],
               "mm": None if affine is None else
               [round(float(x), 2) for x in affine[:3, :3] @ v + affine[:3, 3]],
               "value": float(result.values[p])}
        for name, values in result.maps.items():
            if name != result.stat:
                row[name] = float(values[p])
        if conn is not None:
            k = np.flatnonzero(ids == int(conn))
            col = counts[:, k[0]] if k.size else np.zeros(counts.shape[0])
            a, b = sp.pair_names([int(conn)])[0]
            drivers = [{"connection_id": int(conn), "name": f"{a} -- {b}",
                        "mean_by_group": {g: round(float(col[groups == g].mean()), 3)
                                          for g in item["groups"]}}]
        else:
            mean = counts.mean(axis=0) if counts.shape[0] else np.zeros(ids.shape[0])
            labeled = np.flatnonzero(ids != 0)
            order = labeled[np.lexsort((ids[labeled], -mean[labeled]))][:N_DRIVERS]
            names = pm.region_pair_names
            drivers = [{"connection_id": int(ids[k]), "name": names[k],
                        "mean_streamlines": round(float(mean[k]), 3)} for k in order]
        row["drivers"] = drivers
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the report


def top_table_rows(sidecar_body: dict) -> list[dict]:
    """The rows of a map's table of top centers (report and TSV), from its sidecar.

    Parameters
    ----------
    sidecar_body : dict
        A study map's sidecar (``ltpa.study.sidecar.read``); its ``top_centers`` (each with
        its ``mm``: a key grid with an affine) and ``extra_map_files`` are read.

    Returns
    -------
    list of dict
        One dict per top center, in rank order: ``"rank"`` (from 1); ``"i"``, ``"j"``,
        ``"k"``, ``"x_mm"``, ``"y_mm"``, ``"z_mm"`` as the sidecar gives them; ``"value"``
        and each extra map's value (sorted by name) as text with 4 significant digits
        (``"NaN"`` when missing or not finite); and ``"connections"``: the drivers in words,
        joined by ``"; "``. Empty when the sidecar has no top centers.
    """
    out = []
    extra = sorted(sidecar_body.get("extra_map_files") or {})
    for rank, row in enumerate(sidecar_body.get("top_centers") or [], start=1):
        drivers = []
        for d in row["drivers"]:
            if "mean_by_group" in d:
                means = ", ".join(f"{g} {m:g}" for g, m in d["mean_by_group"].items())
                drivers.append(f"{d['name']} (mean streamlines: {means})")
            else:
                drivers.append(f"{d['name']} ({d['mean_streamlines']:g} per scan)")
        mm = row.get("mm") or ["", "", ""]  # a map without an affine has no mm
        r = {"rank": rank, "i": row["ijk"][0], "j": row["ijk"][1], "k": row["ijk"][2],
             "x_mm": mm[0], "y_mm": mm[1], "z_mm": mm[2],
             "value": _fmt(row["value"])}
        for name in extra:
            r[name] = _fmt(row.get(name))
        r["connections"] = "; ".join(drivers)
        out.append(r)
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "NaN"
    return f"{v:.4g}"


def write_top_table(map_path, out_tsv) -> None:
    """The map's top centers (its sidecar's) as a TSV for the report.

    The columns are those of ``top_table_rows`` (the base ones when there are no rows); the
    header line and each row end with a newline. The file is written atomically.

    Parameters
    ----------
    map_path : str or os.PathLike
        The map (.nii.gz) whose sidecar is read.
    out_tsv : str or os.PathLike
        The TSV to write.

    Raises
    ------
    LtpaError
        If the map's sidecar is missing, unreadable or malformed, or is not that of a study
        map; or if the TSV cannot be written.
    """
    body, why = sidecar.read(map_path)
    if body is None or body.get("kind") != "study_map":
        raise LtpaError(f"map {str(map_path)!r}: {why or 'its sidecar is not a study map'}")
    rows = top_table_rows(body)
    cols = list(rows[0]) if rows else ["rank", "i", "j", "k", "x_mm", "y_mm", "z_mm", "value",
                                       "connections"]
    with atomic_open(out_tsv, "w") as fh:
        fh.write("\t".join(cols) + "\n")
        for r in rows:
            fh.write("\t".join(str(r[c]) for c in cols) + "\n")
