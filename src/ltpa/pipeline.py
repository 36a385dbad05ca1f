"""The steps, end to end: what the command line and the workflow scripts call.

Each function reads its inputs, runs one kernel and writes its outputs
atomically, with a JSON sidecar recording what the output was built from.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from . import __version__
from .dataset import TrackDataset, VoxelIndex, save_track_dataset
from .errors import LtpaError
from .grids import key_map_for
from .index import build_index
from .io import atomic_open
from .labels import label_streamlines, label_trk_body, load_atlas, regions_from_graphml
from .regions import regions_from_table
from .scalars import average_track_scalars
from .formats import kind_of, open_streamlines
from .trk import open_trk_body
from .trkwrite import key_grid_header, write_key_trk

log = logging.getLogger("ltpa")


def _progress(what):
    last = [0.0]

    def report(done, total):
        now = time.monotonic()
        if now - last[0] > 5 or done == total:
            last[0] = now
            log.info("%s: %d / %d streamlines (%.0f%%)", what, done, total,
                     100.0 * done / max(total, 1))
    return report


def sidecar_path(output) -> Path:
    return Path(str(output) + ".json")


def write_sidecar(output, content: dict) -> None:
    """Write ``<output>.json`` atomically: what the output was built from, and how."""
    body = {"ltpa_version": __version__, "output": str(Path(output).resolve()), **content}
    with atomic_open(sidecar_path(output), "w") as fh:
        json.dump(body, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def read_sidecar(output):
    """The sidecar of ``output`` as a dict, or None when there is none (or it is unreadable)."""
    try:
        with open(sidecar_path(output)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def _key_map(trk, trk_path, space, legacy_dsi2_mni_offset, ctx):
    """The native -> key map of ``trk`` for its declared space (errors name scan and file)."""
    where = f"file {str(trk_path)!r}"
    return key_map_for(space, trk.dim, trk.voxel_size, trk.voxel_order,
                       legacy_dsi2_mni_offset=legacy_dsi2_mni_offset,
                       context=f"{ctx}, {where}" if ctx else where)


def _context(scan_id):
    return f"scan {scan_id!r}" if scan_id is not None else ""


def index_scan(trk_path, out_pkl, *, space="qsdr", legacy_dsi2_mni_offset=False,
               scan_id=None, properties=None, trk_out=None, sidecar=True,
               reference_volume=None) -> dict:
    """Hash ``trk_path`` into a TrackDataset pickled at ``out_pkl`` (and a key-grid .trk)."""
    t0 = time.perf_counter()
    ctx = _context(scan_id)
    trk = open_streamlines(trk_path, space, reference_volume, context=ctx)
    key_map = _key_map(trk, trk_path, space, legacy_dsi2_mni_offset, ctx)
    log.info("%s: %d streamlines, %d points, grid %s %s", trk_path, trk.n_streamlines,
             trk.n_points, "x".join(map(str, trk.dim)), trk.voxel_order)
    _check_index_fits(key_map.grid.dim, trk_path, ctx)
    try:
        csr = build_index(trk, key_map, progress=_progress("hashing"))
    except MemoryError:
        raise LtpaError(
            f"{ctx + ', ' if ctx else ''}file {str(trk_path)!r}: not enough memory to index "
            f"{trk.n_streamlines} streamlines ({trk.n_points} points) in the "
            f"{'x'.join(map(str, key_map.grid.dim))} key grid"
        ) from None
    t_index = time.perf_counter() - t0
    stats = {
        "n_streamlines": trk.n_streamlines,
        "n_points": trk.n_points,
        "n_voxels": int(csr.voxels.shape[0]),
        "n_points_outside_grid": int(csr.n_outside),
        "seconds_read_and_index": round(t_index, 3),
    }
    if csr.n_outside:
        log.warning("%d of %d points fall outside the %s key grid and are left out of the index",
                    csr.n_outside, trk.n_points, "x".join(map(str, key_map.grid.dim)))
    build = {
        "ltpa_version": __version__,
        "space": space,
        "legacy_dsi2_mni_offset": bool(legacy_dsi2_mni_offset),
        "trk_file": str(Path(trk_path).resolve()),
        "key_map": {"sign": list(key_map.sign), "shift": list(key_map.shift)},
        **stats,
    }
    if out_pkl is not None:
        dataset = TrackDataset(
            scan_id=scan_id,
            properties=dict(properties or {}),
            header=key_grid_header(trk, key_map, trk.n_streamlines),
            index=VoxelIndex(csr.dim, csr.voxels, csr.indptr, csr.ids),
            words=trk.words,
            starts=trk.starts,
            counts=trk.counts,
            stride=trk.stride,
            mm_sign=key_map.mm_sign,
            mm_shift=key_map.mm_shift,
            space=space,
            build=build,
        )
        save_track_dataset(dataset, out_pkl)
        if sidecar:
            write_sidecar(out_pkl, {"kind": "track_dataset", "scan_id": scan_id,
                                    "inputs": {"trk_file": build["trk_file"]}, "build": build,
                                    # what `ltpa status` compares with the JSON's metadata
                                    "properties": dict(properties or {})})
        log.info("wrote %s (%d voxels) in %.2f s", out_pkl, stats["n_voxels"],
                 time.perf_counter() - t0)
    if trk_out is not None:
        write_key_trk(trk, key_map, trk_out)
        log.info("wrote %s", trk_out)
    return stats


# bytes per key-grid voxel that build_index allocates (last id int32, count and slot int64)
INDEX_BYTES_PER_VOXEL = 20


def _check_index_fits(dim, trk_path, ctx) -> None:
    """A header grid whose per-voxel arrays exceed this machine's memory: a clear error, not OOM."""
    n_vox = 1
    for d in dim:
        n_vox *= int(d)
    need = INDEX_BYTES_PER_VOXEL * n_vox
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise LtpaError(
            f"{ctx + ', ' if ctx else ''}file {str(trk_path)!r}: the key grid "
            f"{'x'.join(map(str, dim))} ({n_vox} voxels) needs {need / 2**30:.1f} GiB for the "
            f"index, more than this machine's {have / 2**30:.1f} GiB; is the header's dim right?"
        )


def export_key_trk(trk_path, out_trk, *, space="qsdr", legacy_dsi2_mni_offset=False,
                   scan_id=None, reference_volume=None) -> dict:
    """Write the streamlines of ``trk_path`` in the key grid (pkl_trk_path)."""
    ctx = _context(scan_id)
    trk = open_streamlines(trk_path, space, reference_volume, context=ctx)
    key_map = _key_map(trk, trk_path, space, legacy_dsi2_mni_offset, ctx)
    write_key_trk(trk, key_map, out_trk)
    write_sidecar(out_trk, {"kind": "key_trk", "scan_id": scan_id,
                            "inputs": {"trk_file": str(Path(trk_path).resolve())},
                            "build": {"space": space,
                                      "legacy_dsi2_mni_offset": bool(legacy_dsi2_mni_offset),
                                      "n_streamlines": trk.n_streamlines}})
    log.info("wrote %s: %d streamlines in the %s key grid", out_trk, trk.n_streamlines, space)
    return {"n_streamlines": trk.n_streamlines}


def label_scan(trk_path, atlas_path, out_npy, *, graphml_path=None, labels_path=None, start=1,
               scan_id=None, atlas_key=None, sidecar=True, space="qsdr",
               reference_volume=None) -> dict:
    """Label every streamline of ``trk_path`` with ``atlas_path``; save ids to ``out_npy``."""
    t0 = time.perf_counter()
    ctx = _context(scan_id)
    # a native-order .trk is walked and labeled in one sweep (label_trk_body); anything else
    # (other formats, .trk.gz, big-endian) is opened first and labeled in a second pass
    body = None
    if kind_of(trk_path) == ".trk":
        body = open_trk_body(trk_path)  # header errors, as open_streamlines raises them
        if not body.native:
            body = None
    if body is None:
        trk = open_streamlines(trk_path, space, reference_volume, context=ctx)
        dim = trk.dim
    else:
        dim = body.dim
    try:
        atlas = load_atlas(atlas_path, expected_dim=dim, context=ctx)
        if graphml_path:
            regions = regions_from_graphml(graphml_path, context=ctx)
            source = "graphml"
        elif labels_path:
            regions = regions_from_table(labels_path, context=ctx)
            source = "labels_path"
        else:
            regions = atlas.labels
            source = "atlas"
            log.warning("%sno graphml_path: the region list is this atlas's own labels (%d); "
                        "connection ids are comparable across scans only if every scan's atlas "
                        "has the same labels", f"{ctx}: " if ctx else "", regions.shape[0])
        if body is not None and start not in (0, 1):  # label_streamlines' check, up front
            raise LtpaError(f"connection_ids_start_at must be 0 or 1, not {start!r}")
    except LtpaError:
        if body is not None:
            # errors in the trk's records come first, as when it was opened before the atlas
            open_streamlines(trk_path, space, reference_volume, context=ctx)
        raise
    if body is None:
        result = label_streamlines(trk, atlas, regions, start=start, progress=_progress("labeling"))
        n = trk.n_streamlines
    else:
        result, n = label_trk_body(body, atlas, regions, start=start,
                                   progress=_progress("labeling"))
    if result.unknown_labels.size:
        log.warning("atlas labels not in the region list, treated as background: %s",
                    ", ".join(str(int(v)) for v in result.unknown_labels))
    with atomic_open(out_npy, "wb") as fh:
        np.save(fh, result.ids)
    unlabeled = int(np.count_nonzero(result.ids == 0))
    share = unlabeled / n if n else 0.0
    log.info("%d of %d streamlines (%.1f%%) have connection id 0 (fewer than two labeled points)",
             unlabeled, n, 100.0 * share)
    stats = {
        "n_streamlines": n,
        "n_unlabeled": unlabeled,
        "share_unlabeled": round(share, 6),
        "n_regions": int(regions.shape[0]),
        "region_source": source,
        "labels_not_in_region_list": [int(v) for v in result.unknown_labels],
        "n_points_outside_grid": int(result.n_points_outside),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if sidecar:
        write_sidecar(out_npy, {
            "kind": "connection_ids",
            "scan_id": scan_id,
            "atlas": atlas_key,
            "region_ids": [int(v) for v in regions],
            "connection_ids_start_at": int(start),
            "numbering": "position of (min(a,b), max(a,b)) in np.triu_indices(len(region_ids)) "
                         "+ connection_ids_start_at; 0 = fewer than two labeled points",
            "inputs": {
                "trk_file": str(Path(trk_path).resolve()),
                "volume_path": str(Path(atlas_path).resolve()),
                "graphml_path": str(Path(graphml_path).resolve()) if graphml_path else None,
                "labels_path": str(Path(labels_path).resolve()) if labels_path else None,
            },
            "stats": stats,
        })
    return stats


def scalars_scan(txt_path, trk_path, out_npy, *, scan_id=None, space="qsdr",
                 reference_volume=None) -> dict:
    """Mean per streamline of DSI Studio's per-streamline scalar export."""
    trk = open_streamlines(trk_path, space, reference_volume, context=_context(scan_id))
    return average_track_scalars(txt_path, trk.n_streamlines, out_npy, context=_context(scan_id),
                                 trk_path=trk_path)
