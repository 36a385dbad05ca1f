"""Track scalars: DSI Studio's per-streamline text export -> mean per streamline (.npy)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_open

log = logging.getLogger("ltpa")


def average_track_scalars(txt_path, n_streamlines: int, out_npy, trk_path=None,
                          before_rename=None) -> dict:
    """One line per streamline of space-separated values -> float64 mean per streamline.

    An empty line gives NaN (a streamline without values). A line count other
    than ``n_streamlines`` is an error naming both.

    The means are saved with ``np.save`` to a temp file beside ``out_npy`` and renamed onto
    it (``ltpa.io.atomic_open``).

    Parameters
    ----------
    txt_path : str or os.PathLike
        DSI Studio's text export: one line of space-separated numbers per streamline.
    n_streamlines : int
        The number of streamlines the file must have lines for.
    out_npy : str or os.PathLike
        The .npy to write: a 1-D float64 array of ``n_streamlines`` means.
    trk_path : str or os.PathLike, optional
        The streamline file, named in the line-count error.
    before_rename : callable, optional
        Called with no arguments after the data is on disk and before the rename; it raises
        to keep the output from replacing ``out_npy``.

    Returns
    -------
    dict
        ``{"n_streamlines": int, "n_empty": int}``: the number of means written and how many
        of them are NaN (empty lines, or values whose mean is NaN).

    Raises
    ------
    InputError
        If ``txt_path`` does not exist, a line is not a list of numbers, or the number of
        lines is not ``n_streamlines``.
    LtpaError
        If the output cannot be written (``atomic_open``).
    """
    txt_path = Path(txt_path)
    if not txt_path.exists():
        raise InputError(f"scalar file {str(txt_path)!r} does not exist")
    means = []
    with open(txt_path, "r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                means.append(np.nan)
                continue
            try:
                values = np.array(text.split(), dtype=np.float64)
            except ValueError:
                raise InputError(f"scalar file {str(txt_path)!r} line {lineno}: not a list of "
                                f"numbers ({text[:40]!r})") from None
            means.append(values.mean())
    if len(means) != n_streamlines:
        trk = f" in {str(trk_path)!r}" if trk_path else ""
        raise InputError(f"scalar file {str(txt_path)!r} has {len(means)} lines but there are "
                        f"{n_streamlines} streamlines{trk}; expected one line per streamline")
    out = np.asarray(means, dtype=np.float64)
    with atomic_open(out_npy, "wb", before_rename=before_rename) as fh:
        np.save(fh, out)
    log.info("wrote %s: mean of %s for %d streamlines", out_npy, txt_path.name, len(out))
    return {"n_streamlines": len(out), "n_empty": int(np.isnan(out).sum())}
