"""Region lists: from a graphml, from a label table (TSV/CSV or an MRtrix/FreeSurfer LUT)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import LtpaError


def regions_from_table(path, context="") -> np.ndarray:
    """Sorted positive region indices from a label table.

    Accepted: TSV/CSV with ``index,name`` columns (a header row is skipped), and
    MRtrix / FreeSurfer colour LUTs (``index name R G B A``). Lines starting with
    ``#`` are comments; index 0 (Unknown / background) is left out.
    """
    path = Path(path)
    pre = f"{context}: " if context else ""
    if not path.exists():
        raise LtpaError(f"{pre}label table {str(path)!r} does not exist")
    ids = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            first = re.split(r"[,\t ]+", text, maxsplit=1)[0].strip().strip('"')
            try:
                value = int(first)
            except ValueError:
                if not ids and lineno <= 5:
                    continue  # a header row ("index,name")
                raise LtpaError(f"{pre}label table {str(path)!r} line {lineno}: first column "
                                f"{first!r} is not an integer region index") from None
            if value < 0:
                raise LtpaError(f"{pre}label table {str(path)!r} line {lineno}: negative index {value}")
            if value:
                ids.append(value)
    if not ids:
        raise LtpaError(f"{pre}label table {str(path)!r} lists no region indices")
    return np.unique(np.asarray(ids, dtype=np.int64))
