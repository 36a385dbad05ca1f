"""Helpers shared by the candidate scripts (each candidate runs in its own interpreter).

Every candidate prints, as its last stdout line, ``PHASES {json}`` with internal phase
timings (seconds) and a few facts; ``run.py`` parses it for the notes column.
A candidate that cannot run (missing dependency) prints ``SKIP: reason`` and exits 3.
"""
import json
import sys
import time

SKIP_RC = 3


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP_RC)


class Phases:
    def __init__(self):
        self.t = time.perf_counter()
        self.d = {}

    def mark(self, name):
        now = time.perf_counter()
        self.d[name] = round(now - self.t, 3)
        self.t = now

    def done(self, **facts):
        self.d.update(facts)
        print("PHASES " + json.dumps(self.d), flush=True)


def read_trk_voxmm(path):
    """Read a TrackVis file the 2013 way (like the removed ``nibabel.trackvis.read``):
    a Python loop over records, returning a list of (n,3) float32 arrays in *voxmm*
    (TrackVis corner convention, no affine applied).  Supports no scalars/properties
    only (what the synthetic data has)."""
    import numpy as np
    from nibabel.streamlines.trk import header_2_dtype

    with open(path, "rb") as f:
        buf = f.read()
    hdr = np.frombuffer(buf, dtype=header_2_dtype, count=1)[0]
    if hdr["hdr_size"] != 1000:
        raise ValueError("big-endian / non-v2 TrackVis not supported here")
    ns, npr = int(hdr["nb_scalars_per_point"]), int(hdr["nb_properties_per_streamline"])
    if ns or npr:
        raise ValueError("scalars/properties not supported by this reader")
    n_expected = int(hdr["nb_streamlines"])
    out = []
    pos = 1000
    end = len(buf)
    frombuffer = np.frombuffer
    while pos < end:
        n = int(frombuffer(buf, np.int32, 1, pos)[0])
        out.append(frombuffer(buf, np.float32, 3 * n, pos + 4).reshape(n, 3))
        pos += 4 + 12 * n
    if n_expected and len(out) != n_expected:
        raise ValueError(f"read {len(out)} streamlines, header says {n_expected}")
    return out, hdr
