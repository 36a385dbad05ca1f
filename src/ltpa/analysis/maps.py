"""A study map written to disk: what ``ltpa map`` and the workflow's map jobs run.

``write_map`` opens the study (``TrackDataSource``), selects the atlas, runs a built-in
statistic (``run_ltpa``) and writes, each atomically, only once everything is computed:

- ``out_path`` (.nii.gz / .nii): the statistic's map in the key grid, NaN where nothing was
  computed;
- ``extra_map_path(out_path, name)`` = ``<out without .nii.gz>.<name>.nii.gz`` for each other
  map the statistic makes (``p_fwe``; ``within_subject`` and ``between_subject`` of
  ``similarity`` with repeat scans);
- ``<out_path>.json``: what was computed (stat, options, radius, atlas, scans, the pattern
  files read, the extra maps' files), written last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from ..io import atomic_open
from .reader import TrackDataSource
from .run import _check_name, run_ltpa

MAP_FORMAT = "ltpa-map"
MAP_VERSION = 1


def extra_map_path(out_path, name) -> Path:
    """The file of the extra map ``name`` beside the map ``out_path``.

    Parameters
    ----------
    out_path : str or os.PathLike
        The main map's file.
    name : str
        The extra map's name (e.g. ``p_fwe``).

    Returns
    -------
    pathlib.Path
        ``<out>.<name>.nii.gz`` for ``<out>.nii.gz``, ``<out>.<name>.nii`` for ``<out>.nii``,
        else ``out_path`` with ``.<name>.nii.gz`` appended.
    """
    text = os.fspath(out_path)
    for ext in (".nii.gz", ".nii"):
        if text.endswith(ext):
            return Path(f"{text[:-len(ext)]}.{name}{ext}")
    return Path(f"{text}.{name}.nii.gz")


def save_maps(result, out_path, extra=None) -> dict:
    """Write ``result``'s map at ``out_path`` and each other map it holds beside it
    (``extra_map_path``, or the paths given in ``extra``), each atomically.

    Returns
    -------
    dict
        ``{"map": out_path, <extra map name>: path, ...}``.
    """
    written = {"map": result.save(out_path)}
    for name in result.maps:
        if name != result.stat:
            path = extra[name] if extra else extra_map_path(out_path, name)
            written[name] = result.save(path, name)
    return written


def write_map(local_data, out_path, *, atlas, radius=0, stat, config=None, data_root=None,
              centers=None, min_tracks=1, n_jobs=1, progress=False, **stat_options) -> dict:
    """Compute the map ``stat`` of a study and write it (and its extra maps) atomically.

    Parameters
    ----------
    local_data : path
        The study's local_data.json (its pkls and npys made).
    out_path : path
        The map's NIfTI (.nii.gz or .nii).
    atlas : dict
        The ``track_labels`` selection: ``{"name": ..., **parameters}`` (as
        ``TrackDataSource.change_atlas(**atlas)``).
    radius, stat, centers, min_tracks, n_jobs, **stat_options
        As ``run_ltpa`` (``stat`` a built-in statistic's name).
    config : dict, optional
        The workflow config (default: this checkout's, with the schema's defaults).

    Returns
    -------
    dict
        ``{"map": out_path, <extra map name>: path, ..., "json": path}``.

    Raises
    ------
    LtpaError
        A bad output name, statistic, atlas, option or study (nothing is written).
    """
    import warnings

    out_path = Path(out_path)
    if not (out_path.name.endswith(".nii.gz") or out_path.name.endswith(".nii")):
        raise InputError(f"output {str(out_path)!r}: expected a .nii.gz or .nii file name")
    if not isinstance(stat, str):
        raise InputError(f"stat {stat!r}: expected a built-in statistic's name")
    _check_name(stat, stat_options)
    if not isinstance(atlas, dict) or not atlas:
        raise InputError(f"atlas {atlas!r}: expected a dict of the track_labels name and "
                         f"parameters, e.g. {{'name': 'Lausanne2008', 'scale': 33}}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = TrackDataSource(local_data, config=config, data_root=data_root)
        source.change_atlas(**atlas)
        result = run_ltpa(stat, source, radius=radius, centers=centers, min_tracks=min_tracks,
                          n_jobs=n_jobs, progress=progress, **stat_options)
    for w in caught:
        warnings.warn(str(w.message), stacklevel=2)
    written = save_maps(result, out_path)
    body = {"format": MAP_FORMAT, "version": MAP_VERSION, "local_data": str(source.json_source),
            "map": out_path.name, "extra_maps": {k: Path(v).name for k, v in written.items()
                                                 if k != "map"},
            "stat": stat, "atlas": atlas, "radius": result.radius, "n_centers": len(result),
            "warnings": [str(w.message) for w in caught], **result.meta}
    json_path = Path(f"{out_path}.json")
    with atomic_open(json_path, "w") as fh:
        json.dump(body, fh, indent=1, default=_default)
        fh.write("\n")
    written["json"] = json_path
    return written


def _default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
