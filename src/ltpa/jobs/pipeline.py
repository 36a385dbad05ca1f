"""The steps, end to end, and the one runner that every job goes through.

``run(spec)`` holds the output's lock for the whole job, records each input's identity at the
start, runs the step, and lets the output replace the old one only if every input is still
the file it started from (``InputWatch.check``, called just before the rename); then it
writes the output's sidecar (``ltpa.study.sidecar``). Errors get their scan/atlas/field context
here, once. The command line, the workflow and the tests all call ``run`` (or the thin
``index_scan``/``label_scan``/... wrappers below, which build a spec).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import __version__
from ..dataset import TrackDataset, VoxelIndex, load_track_dataset, save_track_dataset
from ..errors import InputError, LtpaError, StaleOutputError
from ..formats.convert import as_trk, kind_of
from ..formats.grids import grid_for, key_map_for, streamline_grid
from ..formats.trk import TrkFile, describe_change, identity_of
from ..formats.trkwrite import key_grid_header, write_key_trk
from ..io import atomic_open, output_lock
from ..prepared.b0map import map_b0_atlas
from ..prepared.connections import region_list
from ..prepared.index import INDEX_BYTES_PER_VOXEL, build_index
from ..prepared.labels import label_trk, load_atlas
from ..prepared.patterns import check_radius, dataset_meta, write_patterns_file
from ..prepared.scalars import average_track_scalars
from ..progress import progress_logger
from ..qc.tables import write_scan_qc
from ..study import sidecar
from ..study.spec import JobSpec

log = logging.getLogger("ltpa")


# --------------------------------------------------------------------------- the runner


class InputWatch:
    """The identity of every input file at the start of a job, checked again before a rename."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.at_start = {}
        self.data = {}
        for fld, path in spec.inputs.items():
            if path is None:
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise InputError(f"file {str(path)!r} does not exist") from None
            except OSError as exc:
                raise InputError(f"file {str(path)!r} cannot be read: {exc.strerror}") from None
            self.at_start[fld] = identity_of(st)

    def check(self) -> None:
        """Raise if an input file is not the one the job started from.

        Raises
        ------
        StaleOutputError
            If an input was removed, replaced or modified since the start (device, inode,
            size or mtime_ns differ), naming the file and how it changed.
        """
        for fld, before in self.at_start.items():
            path = self.spec.inputs[fld]
            try:
                now = identity_of(os.stat(path))
            except OSError:
                now = None
            if now != before:
                raise StaleOutputError(
                    f"file {str(path)!r} {describe_change(before, now)} while the job ran; "
                    f"nothing was written: run again once the file is stable")

    def records(self, output) -> dict:
        """The sidecar's record of each input, as it was at the start (content hash if small).

        Parameters
        ----------
        output : str or os.PathLike
            The job's output; each record's ``relpath`` is relative to its folder.

        Returns
        -------
        dict
            Input field -> {"path" (absolute), "relpath", "size" (bytes), "mtime_ns", and
            "sha256" (hex) for a file of at most ``sidecar.HASH_MAX_BYTES`` that could be
            read}, for every input the job has (fields whose path is None are left out).
        """
        folder = os.path.dirname(os.path.abspath(output))
        out = {}
        for fld, ident in self.at_start.items():
            path = os.path.abspath(self.spec.inputs[fld])
            rec = {"path": path, "relpath": os.path.relpath(path, folder), "size": ident.size,
                   "mtime_ns": ident.mtime_ns}
            if ident.size <= sidecar.HASH_MAX_BYTES:
                digest = sidecar.sha256_of(path)
                if digest is not None:
                    rec["sha256"] = digest
            out[fld] = rec
        return out


def check_output_path(spec: JobSpec) -> None:
    """Refuse an output that is one of the job's inputs, a folder or a symlink.

    Parameters
    ----------
    spec : JobSpec
        The job; its ``output`` is checked against its ``inputs`` (paths resolved).

    Raises
    ------
    InputError
        If the output, or (when the job writes one) its sidecar, is one of the job's input
        files, or the output is a symbolic link or an existing folder.
    """
    out = spec.output
    real = os.path.realpath(out)
    side = os.path.realpath(str(sidecar.path_of(out)))
    for fld, path in spec.inputs.items():
        if path is None:
            continue
        rp = os.path.realpath(path)
        if rp == real:
            raise InputError(f"output {out!r} is the job's input {fld} {path!r}; refusing to "
                            f"overwrite an input")
        if spec.sidecar and rp == side:
            raise InputError(f"the sidecar of output {out!r} would overwrite the job's input {fld} "
                            f"{path!r}")
    if os.path.islink(out):
        raise InputError(f"output {out!r} is a symbolic link; refusing to write through it "
                        f"(give the real path)")
    if os.path.isdir(out):
        raise InputError(f"output {out!r} is an existing folder, not a file")


class _ScanPrefix(logging.Filter):
    """Warnings logged during a job start with the job's scan (and atlas)."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        if record.levelno >= logging.WARNING and self.prefix and \
                not str(record.msg).startswith(self.prefix):
            record.msg = f"{self.prefix}: {record.msg}"
        return True


def run(spec: JobSpec) -> dict:
    """Make ``spec.output`` (and its sidecar); returns the step's statistics.

    The output path is checked (``check_output_path``), the output's lock is held for the
    whole job, the step (``STEPS[spec.step]``) runs, and the sidecar is written when
    ``spec.sidecar``. Warnings logged meanwhile start with the job's scan (and atlas).

    Parameters
    ----------
    spec : JobSpec
        The job: its step, output, inputs and parameters.

    Returns
    -------
    dict
        The step's statistics (what the sidecar records under "stats"), without the
        "_sidecar" entry.

    Raises
    ------
    LtpaError
        Any error of the job (``InputError``, ``GeometryError``, ``DamagedFileError``,
        ``StaleOutputError``, ...), its message prefixed once with the scan, atlas and input
        field it concerns (``JobSpec.where``). When the step raises an ``LtpaError``, an
        input that changed meanwhile is reported instead (``StaleOutputError``).
    """
    t0 = time.perf_counter()
    prefix = _ScanPrefix(spec.where())
    log.addFilter(prefix)
    try:
        return _run(spec, t0)
    finally:
        log.removeFilter(prefix)


def _run(spec: JobSpec, t0) -> dict:
    try:
        check_output_path(spec)
        with output_lock(spec.output):
            watch = InputWatch(spec)
            try:
                stats = STEPS[spec.step](spec, watch)
            except LtpaError:
                watch.check()  # an input that changed explains a failure better than its symptom
                raise
            if spec.sidecar:
                extra = stats.pop("_sidecar", {})
                sidecar.write(spec.output, spec.kind, inputs=watch.records(spec.output),
                              params=spec.params(), scan_id=spec.scan_id, atlas=spec.atlas,
                              stats=stats, **extra)
            else:
                stats.pop("_sidecar", None)
    except LtpaError as exc:
        raise exc.in_context(spec.where(str(exc))) from exc.__cause__
    log.info("wrote %s in %.2f s", spec.output, time.perf_counter() - t0)
    return stats


# --------------------------------------------------------------------------- opening streamlines


class _Streamlines:
    """The job's streamline file as an open ``TrkFile`` (converted first if not a .trk)."""

    def __init__(self, spec: JobSpec):
        import contextlib


        self._stack = contextlib.ExitStack()
        path = spec.inputs["trk_file"]
        grid = None
        if kind_of(path) in (".tck", ".trx"):
            grid = grid_for(spec.space, spec.inputs.get("reference_volume"))
        try:
            self.path = self._stack.enter_context(as_trk(path, grid))
            self.trk = self._stack.enter_context(TrkFile(self.path))
        except BaseException:
            self._stack.close()
            raise
        self.source = path

    def __enter__(self):
        return self.trk

    def __exit__(self, *exc):
        self._stack.close()


def _key_map(trk, spec: JobSpec):
    return key_map_for(spec.space, trk.dim, trk.voxel_size, trk.voxel_order,
                       legacy_dsi2_mni_offset=spec.legacy_dsi2_mni_offset,
                       where=f"file {str(spec.inputs['trk_file'])!r}", vox_to_ras=trk.vox_to_ras)


def _unchanged(trk, watch):
    def check():
        trk.check_unchanged("the job ran")
        watch.check()
    return check


# --------------------------------------------------------------------------- steps


def step_index(spec: JobSpec, watch: InputWatch) -> dict:
    """Index a scan's streamlines by key-grid voxel and pickle the TrackDataset at ``spec.output``.

    The streamline file (``spec.inputs["trk_file"]``, converted to .trk first when it is a
    .tck or .trx) is read once; its body is copied into the pkl, which is written atomically
    and replaces the old one only if the file and every input are unchanged.

    Parameters
    ----------
    spec : JobSpec
        An "index" job: ``trk_file`` and optionally ``reference_volume`` among its inputs.
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        The statistics: n_streamlines, n_points, n_voxels, n_points_outside_grid,
        seconds_read_and_index; and under "_sidecar" the ``build`` record for the sidecar.

    Raises
    ------
    LtpaError
        If the key grid's index needs more memory than the machine has, or memory runs
        out while indexing; the readers' errors for a file that cannot be used.
    StaleOutputError
        If the streamline file or an input changed while the job ran (nothing is written).
    """
    t0 = time.perf_counter()
    with _Streamlines(spec) as trk:
        key_map = _key_map(trk, spec)
        _check_index_fits(key_map.grid.dim, INDEX_BYTES_PER_VOXEL, spec)
        try:
            csr = build_index(trk, key_map, progress=progress_logger("hashing"))
        except MemoryError:
            raise LtpaError(f"file {str(spec.inputs['trk_file'])!r}: not enough memory to index "
                            f"it in the {'x'.join(map(str, key_map.grid.dim))} key grid") from None
        log.info("%s: %d streamlines, %d points, grid %s %s", spec.inputs["trk_file"],
                 csr.n_streamlines, csr.n_points, "x".join(map(str, trk.dim)), trk.voxel_order)
        if csr.n_outside:
            log.warning("%d of %d points fall outside the %s key grid and are left out of the "
                        "index", csr.n_outside, csr.n_points,
                        "x".join(map(str, key_map.grid.dim)))
        stats = {
            "n_streamlines": csr.n_streamlines,
            "n_points": csr.n_points,
            "n_voxels": int(csr.voxels.shape[0]),
            "n_points_outside_grid": int(csr.n_outside),
            "seconds_read_and_index": round(time.perf_counter() - t0, 3),
        }
        build = {"ltpa_version": __version__, "space": spec.space,
                 "legacy_dsi2_mni_offset": bool(spec.legacy_dsi2_mni_offset),
                 "trk_file": str(Path(spec.inputs["trk_file"]).resolve()),
                 "key_map": {"sign": list(key_map.sign), "shift": list(key_map.shift)}, **stats}
        dataset = TrackDataset(
            scan_id=spec.scan_id, properties=dict(spec.properties or {}),
            header=key_grid_header(trk, key_map, csr.n_streamlines),
            index=VoxelIndex(csr.dim, csr.voxels, csr.indptr, csr.ids),
            words=trk.body_array(), counts=csr.counts, stride=trk.stride,
            n_properties=trk.n_properties, mm_sign=key_map.mm_sign, mm_shift=key_map.mm_shift,
            space=spec.space, build=build)
        save_track_dataset(dataset, spec.output, body_fd=trk.fd,
                           before_rename=_unchanged(trk, watch))
    stats["_sidecar"] = {"build": build}
    return stats


def _check_index_fits(dim, bytes_per_voxel, spec) -> None:
    """A header grid whose per-voxel arrays exceed this machine's memory: a clear error, not OOM."""
    n_vox = 1
    for d in dim:
        n_vox *= int(d)
    need = bytes_per_voxel * n_vox
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise LtpaError(
            f"file {str(spec.inputs['trk_file'])!r}: the key grid {'x'.join(map(str, dim))} "
            f"({n_vox} voxels) needs {need / 2**30:.1f} GiB for the index, more than this "
            f"machine's {have / 2**30:.1f} GiB; is the header's dim right?")


def step_export(spec: JobSpec, watch: InputWatch) -> dict:
    """Write a scan's streamlines in the key grid's voxmm as a .trk at ``spec.output``.

    Written atomically; the old output is replaced only if the streamline file and every
    input are unchanged.

    Parameters
    ----------
    spec : JobSpec
        An "export" job: ``trk_file`` and optionally ``reference_volume`` among its inputs.
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        ``{"n_streamlines": n}``, the number of streamlines written.

    Raises
    ------
    StaleOutputError
        If the streamline file or an input changed while the job ran (nothing is written).
    """
    with _Streamlines(spec) as trk:
        key_map = _key_map(trk, spec)
        n = write_key_trk(trk, key_map, spec.output, before_rename=_unchanged(trk, watch))
    log.info("%d streamlines in the %s key grid", n, spec.space)
    return {"n_streamlines": n}


def step_label(spec: JobSpec, watch: InputWatch) -> dict:
    """Label each streamline with a connection id and save them as an int64 .npy at
    ``spec.output``.

    The atlas (``volume_path``) must be in the streamlines' grid up to axis flips and
    permutations (then it is reoriented by index). The region list is ``graphml_path`` or
    ``labels_path``; without either, the atlas's own labels (with a warning). Id 0 marks a
    streamline with fewer than two labeled points. The .npy is written atomically and
    replaces the old one only if the streamline file and every input are unchanged.

    Parameters
    ----------
    spec : JobSpec
        A "label" job: ``trk_file`` and ``volume_path`` among its inputs, optionally
        ``graphml_path`` or ``labels_path`` and ``reference_volume``.
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        The statistics (n_streamlines, n_unlabeled, share_unlabeled, n_regions,
        region_source, ...); under "_sidecar", the region_ids, connection_ids_start_at and
        numbering the sidecar records.

    Raises
    ------
    InputError
        If ``spec.start`` is not 0 or 1.
    GeometryError
        If the atlas's grid is not the streamlines' up to axis flips and permutations.
    StaleOutputError
        If the streamline file or an input changed while the job ran (nothing is written).
    """
    t0 = time.perf_counter()
    if spec.start not in (0, 1):
        raise InputError(f"connection_ids_start_at must be 0 or 1, not {spec.start!r}")
    with _Streamlines(spec) as trk:
        _key_map(trk, spec)  # the header must be the grid of the declared space
        grid = streamline_grid(spec.space, trk.dim, trk.voxel_size, trk.voxel_order,
                               trk.vox_to_ras)
        atlas = load_atlas(spec.inputs["volume_path"], grid)
        if atlas.note:
            log.warning("atlas %s: %s", spec.inputs["volume_path"], atlas.note)
        regions, source = region_list(spec.inputs.get("graphml_path"),
                                      spec.inputs.get("labels_path"))
        if regions is None:
            regions = atlas.labels
            source = "atlas"
            log.warning("no graphml_path: the region list is this atlas's own labels (%d); "
                        "connection ids are comparable across scans only if every scan's atlas "
                        "has the same labels", regions.shape[0])
        result = label_trk(trk, atlas, regions, start=spec.start,
                           progress=progress_logger("labeling"))
        if result.unknown_labels.size:
            log.warning("atlas labels not in the region list, treated as background: %s",
                        ", ".join(str(int(v)) for v in result.unknown_labels))
        with atomic_open(spec.output, "wb", before_rename=_unchanged(trk, watch)) as fh:
            np.save(fh, result.ids)
    n = int(result.ids.shape[0])
    unlabeled = int(np.count_nonzero(result.ids == 0))
    share = unlabeled / n if n else 0.0
    log.info("%d of %d streamlines (%.1f%%) have connection id 0 (fewer than two labeled points)",
             unlabeled, n, 100.0 * share)
    regions = result.regions
    return {
        "n_streamlines": n,
        "n_unlabeled": unlabeled,
        "share_unlabeled": round(share, 6),
        "n_regions": int(regions.shape[0]),
        "region_source": source,
        "labels_not_in_region_list": [int(v) for v in result.unknown_labels],
        "regions_not_in_atlas": int(np.setdiff1d(regions, atlas.labels).shape[0]),
        "atlas_reoriented": atlas.note,
        "n_points_outside_grid": int(result.n_points_outside),
        "n_points": int(result.n_points),
        "seconds": round(time.perf_counter() - t0, 3),
        "_sidecar": {
            "region_ids": [int(v) for v in regions],
            "connection_ids_start_at": int(spec.start),
            "numbering": "position of (min(a,b), max(a,b)) in np.triu_indices(len(region_ids)) "
                         "+ connection_ids_start_at; 0 = fewer than two labeled points",
        },
    }


def step_map_b0(spec: JobSpec, watch: InputWatch) -> dict:
    """Write the QSDR-space atlas at ``spec.output`` from a b0-space atlas and a fib mapping.

    Parameters
    ----------
    spec : JobSpec
        A "map_b0" job: ``fib_file`` and ``b0_volume_path`` among its inputs.
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        The statistics of ``ltpa.prepared.b0map.map_b0_atlas``: dimension, outside_b0,
        n_labels.

    Raises
    ------
    StaleOutputError
        If an input changed while the job ran (nothing is written).
    """
    return map_b0_atlas(spec.inputs["fib_file"], spec.inputs["b0_volume_path"], spec.output,
                        before_rename=watch.check)


def step_scalars(spec: JobSpec, watch: InputWatch) -> dict:
    """Save the mean of each streamline's values in ``txt_path`` as a float64 .npy at
    ``spec.output``.

    The text file must have one line per streamline of ``trk_file`` (an empty line gives
    NaN); the streamline file is read to count them.

    Parameters
    ----------
    spec : JobSpec
        A "scalars" job: ``txt_path`` and ``trk_file`` among its inputs, optionally
        ``reference_volume``.
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        ``{"n_streamlines": n, "n_empty": k}``: streamlines, and those without values.

    Raises
    ------
    InputError
        If the text file does not exist, has a line that is not a list of numbers, or has
        another number of lines than there are streamlines.
    StaleOutputError
        If the streamline file or an input changed while the job ran (nothing is written).
    """
    with _Streamlines(spec) as trk:
        n = trk.walk().n_streamlines
        return average_track_scalars(spec.inputs["txt_path"], n, spec.output,
                                     trk_path=spec.inputs["trk_file"],
                                     before_rename=_unchanged(trk, watch))


def _npy_regions(npy):
    """The region ids and first connection id an npy's sidecar decodes with, checked
    against the region list it came from (an edited sidecar is an error), or (None, None)."""
    body, _ = sidecar.read(npy)
    if body is None or not isinstance(body.get("region_ids"), list):
        return None, None
    return sidecar.region_ids(body, npy).tolist(), body.get("connection_ids_start_at")


def step_patterns(spec: JobSpec, watch: InputWatch) -> dict:
    """A scan's termination patterns at ``spec.radius`` (``ltpa.prepared.patterns``).

    The pkl is loaded, the npy memory-mapped, and the patterns written to ``spec.output``
    atomically, replacing the old file only if every input is unchanged; the region list in
    the npy's sidecar (when it has one) is checked and recorded in the patterns' meta.

    Parameters
    ----------
    spec : JobSpec
        A "patterns" job: ``pkl_path`` and ``numpy_path`` among its inputs, ``radius`` (in
        voxels) and ``threads`` (the kernel's threads).
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        The statistics: radius, n_streamlines, n_centers, n_entries and seconds (wall
        time of the step).

    Raises
    ------
    LtpaError
        If the npy cannot be read as a .npy array; the readers' errors for a pkl or an npy
        sidecar that cannot be used.
    StaleOutputError
        If an input changed while the job ran (nothing is written).
    """
    t0 = time.perf_counter()
    pkl, npy = spec.inputs["pkl_path"], spec.inputs["numpy_path"]
    ds = load_track_dataset(pkl)
    try:
        conn = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LtpaError(f"file {npy!r} is not a .npy array ({exc})") from None
    inputs = {fld: {"path": os.path.abspath(spec.inputs[fld]), "size": ident.size,
                    "mtime_ns": ident.mtime_ns} for fld, ident in watch.at_start.items()}
    # the region list's check (a graphml parsed in Python) runs while the kernel (GIL-free)
    # does: the meta is asked for after the kernel
    with ThreadPoolExecutor(1) as pool:
        checking = pool.submit(_npy_regions, npy)

        def meta():
            regions, start = checking.result()
            return dataset_meta(ds, region_ids=regions, start=start, inputs=inputs)

        written = write_patterns_file(ds.tracks_at_ijk, conn, spec.radius, spec.output,
                                      n_streamlines=ds.get_ntracks(), meta=meta,
                                      where=f"files {pkl!r} and {npy!r}",
                                      before_rename=watch.check, threads=spec.threads)
    return {"radius": int(spec.radius), "n_streamlines": int(ds.get_ntracks()), **written,
            "seconds": round(time.perf_counter() - t0, 3)}


def step_qc_scan(spec: JobSpec, watch: InputWatch) -> dict:
    """A scan's QC table (``spec.output``) and length histogram (``spec.extra["lengths"]``),
    from its outputs, their sidecars and, when on disk, its trk (``ltpa.qc.tables``).

    Both TSVs are written atomically, each replacing the old file only if every input is
    unchanged.

    Parameters
    ----------
    spec : JobSpec
        A "qc_scan" job: optionally ``pkl_path`` among its inputs; ``extra`` holds
        ``lengths`` (required), and optionally ``atlases``, ``trk_file`` and ``kept``.
    watch : InputWatch
        The identities of the job's inputs at its start.

    Returns
    -------
    dict
        ``{"rows": n}``, the number of rows of the QC table.

    Raises
    ------
    StaleOutputError
        If an input changed while the job ran.
    """
    extra = spec.extra or {}
    rows = write_scan_qc(spec.scan_id, spec.output, extra["lengths"],
                         pkl_path=spec.inputs.get("pkl_path"),
                         atlases=[tuple(a) for a in extra.get("atlases", ())],
                         trk_file=extra.get("trk_file"), start=spec.start,
                         kept=extra.get("kept", ()), before_rename=watch.check)
    return {"rows": len(rows)}


STEPS = {"index": step_index, "export": step_export, "label": step_label,
         "map_b0": step_map_b0, "scalars": step_scalars, "patterns": step_patterns,
         "qc_scan": step_qc_scan}


# --------------------------------------------------------------------------- thin wrappers


def _abs(path):
    return None if path is None else os.path.abspath(str(path))


def _inputs(**kw):
    return {k: _abs(v) for k, v in kw.items() if v is not None}


def index_scan(trk_path, out_pkl, *, space="qsdr", legacy_dsi2_mni_offset=False, scan_id=None,
               properties=None, trk_out=None, sidecar=True, reference_volume=None) -> dict:
    """Hash ``trk_path`` into a TrackDataset pickled at ``out_pkl`` (and a key-grid .trk).

    Each output is made by its own job through ``run`` ("index", then "export"); both
    output paths are checked before either is written.

    Parameters
    ----------
    trk_path : str or os.PathLike
        The streamline file (.trk, .trk.gz, .tck or .trx).
    out_pkl : str or os.PathLike or None
        The pkl to write; None: write none (only ``trk_out``, if given).
    space : str, optional
        The streamlines' declared space: "qsdr" (default), "mni" or "native".
    legacy_dsi2_mni_offset : bool, optional
        Make qsdr keys with dsi2's j -> 102 - j instead of 101 - j.
    scan_id : str, optional
        The scan, stored in the pkl and used in the sidecar and error messages.
    properties : dict, optional
        The scan's metadata, carried in the pkl.
    trk_out : str or os.PathLike, optional
        Also write the streamlines in the key grid's voxmm to this .trk.
    sidecar : bool, optional
        Write each output's sidecar (default True).
    reference_volume : str or os.PathLike, optional
        The NIfTI whose grid a .tck or .trx in native space is put on.

    Returns
    -------
    dict
        The index job's statistics (``step_index``, without "_sidecar"); an empty dict when
        ``out_pkl`` is None.

    Raises
    ------
    InputError
        If an output is an input, a symbolic link or a folder (``check_output_path``;
        nothing is written).
    LtpaError
        Any other error of the jobs, with the scan and field it concerns.
    """
    inputs = _inputs(trk_file=trk_path, reference_volume=reference_volume)
    specs = []
    if out_pkl is not None:
        specs.append(JobSpec("index", _abs(out_pkl), inputs, scan_id=scan_id, space=space,
                             legacy_dsi2_mni_offset=legacy_dsi2_mni_offset,
                             properties=dict(properties or {}), sidecar=sidecar))
    if trk_out is not None:
        specs.append(JobSpec("export", _abs(trk_out), inputs, scan_id=scan_id, space=space,
                             legacy_dsi2_mni_offset=legacy_dsi2_mni_offset, sidecar=sidecar))
    for spec in specs:  # both outputs checked before either is written
        try:
            check_output_path(spec)
        except LtpaError as exc:
            raise exc.in_context(spec.where(str(exc))) from None
    stats = [run(spec) for spec in specs]
    return stats[0] if out_pkl is not None else {}


def index_only(trk_path, *, space="qsdr", legacy_dsi2_mni_offset=False,
               reference_volume=None) -> dict:
    """Read and hash without writing anything (``ltpa index --no-write``, for timing).

    Parameters
    ----------
    trk_path : str or os.PathLike
        The streamline file (.trk, .trk.gz, .tck or .trx).
    space : str, optional
        The streamlines' declared space: "qsdr" (default), "mni" or "native".
    legacy_dsi2_mni_offset : bool, optional
        Make qsdr keys with dsi2's j -> 102 - j instead of 101 - j.
    reference_volume : str or os.PathLike, optional
        The NIfTI whose grid a .tck or .trx in native space is put on.

    Returns
    -------
    dict
        ``{"n_streamlines": n, "n_voxels": v}``: the streamlines read and the key-grid
        voxels they pass through.

    Raises
    ------
    LtpaError
        If the streamline file cannot be read or its header is not the declared space's
        grid, with the field it concerns.
    """
    spec = JobSpec("index", "/dev/null", _inputs(trk_file=trk_path,
                                                  reference_volume=reference_volume),
                   space=space, legacy_dsi2_mni_offset=legacy_dsi2_mni_offset)
    try:
        with _Streamlines(spec) as trk:
            csr = build_index(trk, _key_map(trk, spec))
    except LtpaError as exc:
        raise exc.in_context(spec.where(str(exc))) from None
    return {"n_streamlines": csr.n_streamlines, "n_voxels": int(csr.voxels.shape[0])}


def export_key_trk(trk_path, out_trk, *, space="qsdr", legacy_dsi2_mni_offset=False,
                   scan_id=None, reference_volume=None) -> dict:
    """Write the streamlines of ``trk_path`` in the key grid's voxmm to ``out_trk`` (a .trk),
    with its sidecar, through ``run``.

    Parameters
    ----------
    trk_path : str or os.PathLike
        The streamline file (.trk, .trk.gz, .tck or .trx).
    out_trk : str or os.PathLike
        The .trk to write.
    space : str, optional
        The streamlines' declared space: "qsdr" (default), "mni" or "native".
    legacy_dsi2_mni_offset : bool, optional
        Make qsdr keys with dsi2's j -> 102 - j instead of 101 - j.
    scan_id : str, optional
        The scan, for the sidecar and error messages.
    reference_volume : str or os.PathLike, optional
        The NIfTI whose grid a .tck or .trx in native space is put on.

    Returns
    -------
    dict
        ``{"n_streamlines": n}``.

    Raises
    ------
    LtpaError
        Any error of the job (``step_export``), with the scan and field it concerns.
    """
    return run(JobSpec("export", _abs(out_trk), _inputs(trk_file=trk_path,
                                                        reference_volume=reference_volume),
                       scan_id=scan_id, space=space,
                       legacy_dsi2_mni_offset=legacy_dsi2_mni_offset))


def label_scan(trk_path, atlas_path, out_npy, *, graphml_path=None, labels_path=None, start=1,
               scan_id=None, atlas_key=None, sidecar=True, space="qsdr",
               reference_volume=None) -> dict:
    """Label every streamline of ``trk_path`` with ``atlas_path``; save ids to ``out_npy``.

    Runs a "label" job through ``run`` (``step_label``): the ids are an int64 .npy, 0 for a
    streamline with fewer than two labeled points.

    Parameters
    ----------
    trk_path : str or os.PathLike
        The streamline file (.trk, .trk.gz, .tck or .trx).
    atlas_path : str or os.PathLike
        The atlas NIfTI, in the streamlines' grid up to axis flips and permutations.
    out_npy : str or os.PathLike
        The .npy to write.
    graphml_path : str or os.PathLike, optional
        The region list as a graphml (takes precedence over ``labels_path``).
    labels_path : str or os.PathLike, optional
        The region list as a label table.
    start : int, optional
        The number of the first connection id, 0 or 1 (default 1).
    scan_id : str, optional
        The scan, for the sidecar and error messages.
    atlas_key : str, optional
        The atlas's key in the study, recorded in the sidecar.
    sidecar : bool, optional
        Write the output's sidecar (default True).
    space : str, optional
        The streamlines' declared space (default "qsdr").
    reference_volume : str or os.PathLike, optional
        The NIfTI whose grid a .tck or .trx in native space is put on.

    Returns
    -------
    dict
        The job's statistics (``step_label``): n_streamlines, n_unlabeled,
        share_unlabeled, n_regions, region_source, ...

    Raises
    ------
    InputError
        If ``start`` is not 0 or 1, or an output path cannot be written safely.
    GeometryError
        If the atlas's grid is not the streamlines' up to axis flips and permutations.
    LtpaError
        Any other error of the job, with the scan, atlas and field it concerns.
    """
    return run(JobSpec("label", _abs(out_npy),
                       _inputs(trk_file=trk_path, volume_path=atlas_path,
                               graphml_path=graphml_path, labels_path=labels_path,
                               reference_volume=reference_volume),
                       scan_id=scan_id, atlas=atlas_key, space=space, start=start,
                       sidecar=sidecar))


def scalars_scan(txt_path, trk_path, out_npy, *, scan_id=None, space="qsdr",
                 reference_volume=None) -> dict:
    """Save the mean of each streamline's values in ``txt_path`` to ``out_npy`` (float64),
    with its sidecar, through ``run`` (``step_scalars``).

    Parameters
    ----------
    txt_path : str or os.PathLike
        One line of space-separated values per streamline.
    trk_path : str or os.PathLike
        The scan's streamline file, whose streamlines the lines must match one to one.
    out_npy : str or os.PathLike
        The .npy to write.
    scan_id : str, optional
        The scan, for the sidecar and error messages.
    space : str, optional
        The streamlines' declared space (default "qsdr").
    reference_volume : str or os.PathLike, optional
        The NIfTI whose grid a .tck or .trx in native space is put on.

    Returns
    -------
    dict
        ``{"n_streamlines": n, "n_empty": k}``.

    Raises
    ------
    InputError
        If the text file does not exist, has a line that is not numbers, or does not have
        one line per streamline.
    LtpaError
        Any other error of the job, with the scan and field it concerns.
    """
    return run(JobSpec("scalars", _abs(out_npy),
                       _inputs(txt_path=txt_path, trk_file=trk_path,
                               reference_volume=reference_volume),
                       scan_id=scan_id, space=space))


def map_b0_scan(fib_path, b0_path, out_path, *, scan_id=None) -> dict:
    """Write the QSDR-space atlas ``out_path`` from the b0-space atlas ``b0_path`` and the
    mapping in ``fib_path``, with its sidecar, through ``run`` (``step_map_b0``).

    Parameters
    ----------
    fib_path : str or os.PathLike
        The .fib.gz holding the QSDR mapping.
    b0_path : str or os.PathLike
        The atlas in b0 space.
    out_path : str or os.PathLike
        The NIfTI to write.
    scan_id : str, optional
        The scan, for the sidecar and error messages.

    Returns
    -------
    dict
        dimension, outside_b0 (QSDR voxels mapped outside the b0 volume, per axis), n_labels.

    Raises
    ------
    LtpaError
        Any error of the job, with the scan and field it concerns.
    """
    return run(JobSpec("map_b0", _abs(out_path), _inputs(fib_file=fib_path,
                                                         b0_volume_path=b0_path),
                       scan_id=scan_id))



def write_patterns(pkl_path, npy_path, out_path, radius, *, scan_id=None, atlas_key=None,
                   sidecar=True, threads=1) -> dict:
    """Build one scan's termination patterns at ``radius`` from its pkl and npy and write
    them to ``out_path`` (with the sidecar), the kernel in ``threads`` threads.

    What ``ltpa patterns`` and the workflow's per-scan jobs run (the ``patterns`` step of
    ``run``): atomic, the output's lock held, the inputs checked unchanged before the
    rename. Returns the job's statistics.

    Parameters
    ----------
    pkl_path : str or os.PathLike
        The scan's TrackDataset pkl (``index_scan``).
    npy_path : str or os.PathLike
        The scan's connection ids for one atlas (``label_scan``).
    out_path : str or os.PathLike
        The patterns file to write.
    radius : int
        The sphere's radius in voxels, 0..``ltpa.prepared.patterns.MAX_RADIUS`` (an integral
        float or string is accepted).
    scan_id : str, optional
        The scan, for the sidecar and error messages.
    atlas_key : str, optional
        The atlas the npy was labeled with, recorded in the sidecar.
    sidecar : bool, optional
        Write the output's sidecar (default True).
    threads : int, optional
        Threads of the kernel (at least 1; default 1); does not change the output.

    Returns
    -------
    dict
        The job's statistics (``step_patterns``): radius, n_streamlines, n_centers,
        n_entries, seconds.

    Raises
    ------
    InputError
        If ``radius`` is not an integer in 0..``MAX_RADIUS``.
    LtpaError
        Any error of the job, with the scan, atlas and field it concerns.
    """
    return run(JobSpec("patterns", _abs(out_path), _inputs(pkl_path=pkl_path,
                                                           numpy_path=npy_path),
                       scan_id=scan_id, atlas=atlas_key, radius=check_radius(radius),
                       sidecar=sidecar, threads=max(1, int(threads))))
