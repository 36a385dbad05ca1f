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

    The main map is written first, then the others in the order of ``result.maps``; each
    file is replaced atomically, but a failure part way leaves the ones already written.

    Parameters
    ----------
    result : LtpaResult
        The computed maps: ``result.stat`` is written at ``out_path``, every other name of
        ``result.maps`` to its own file.
    out_path : str or os.PathLike
        The main map's file (.nii.gz or .nii).
    extra : dict, optional
        Extra map name -> its file, for every map of ``result.maps`` other than
        ``result.stat``. None or empty (default): ``extra_map_path(out_path, name)``.

    Returns
    -------
    dict
        ``{"map": out_path, <extra map name>: path, ...}``, the paths as ``pathlib.Path``.

    Raises
    ------
    InputError
        If a file name does not end in .nii or .nii.gz, or a map cannot be a volume (its
        values are not numbers, or not one number per center; ``LtpaResult.volume``).
    LtpaError
        If a file cannot be written (``ltpa.io.atomic_path``: the message names it).
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

    Warnings raised while the study is opened and the map computed are recorded in the
    JSON (``"warnings"``) and raised again to the caller.

    Parameters
    ----------
    local_data : str or os.PathLike
        The study's local_data.json (its pkls and npys made).
    out_path : str or os.PathLike
        The map's NIfTI (.nii.gz or .nii).
    atlas : dict
        The ``track_labels`` selection: ``{"name": ..., **parameters}`` (as
        ``TrackDataSource.change_atlas(**atlas)``); must not be empty.
    radius : int, optional
        Sphere radius in voxels, 0..10, as ``run_ltpa`` (default 0).
    stat : str
        A built-in statistic's name (``run_ltpa``'s ``function``; not a callable).
    config : dict, optional
        The workflow config (default: this checkout's, with the schema's defaults).
    data_root : str or os.PathLike, optional
        Replaces the config's ``data_root`` when given (``TrackDataSource``).
    centers : None, array_like, str, os.PathLike or image, optional
        As ``run_ltpa``: None (default) for every center of any scan, an (N, 3) array of
        key-grid voxels, or a mask in the key grid.
    min_tracks : int, optional
        As ``run_ltpa`` (default 1).
    n_jobs : int, optional
        As ``run_ltpa`` (default 1; a built-in statistic runs in this process).
    progress : bool, optional
        A progress bar on stderr (default False).
    **stat_options
        The statistic's options, as ``run_ltpa``'s ``**stat``.

    Returns
    -------
    dict
        ``{"map": out_path, <extra map name>: path, ..., "json": path}``, the paths as
        ``pathlib.Path``; the JSON is ``<out_path>.json``.

    Raises
    ------
    InputError
        If ``out_path`` does not end in .nii.gz or .nii, ``stat`` is not a built-in
        statistic's name or an option is not one of its options, ``atlas`` is not a
        non-empty dict or no scan has a matching entry, or ``run_ltpa`` rejects a value
        (radius, centers, ``min_tracks``, ``n_jobs``, the connection, the groups). Nothing
        is written.
    LtpaError
        If the study cannot be loaded or used (``TrackDataSource``, ``change_atlas``, a
        scan's pkl, npy or pattern file; the subclasses ``GeometryError``,
        ``DamagedFileError`` and ``StaleOutputError`` included; nothing is written), or an
        output cannot be written (``save_maps``, ``ltpa.io.atomic_open``).
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
