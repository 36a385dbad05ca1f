"""ANCHOR: nibabel.streamlines.load(trk) (eager), then touch every coordinate."""
import sys

from _common import Phases

ph = Phases()
import nibabel as nib  # noqa: E402  (after Phases(): the timed "import" phase)

ph.mark("import")
t = nib.streamlines.load(sys.argv[1])
ph.mark("load")
data = t.streamlines._data  # the ArraySequence's backing (P,3) float32 array, RAS mm
s = float(data.sum(dtype="float64"))
ph.mark("touch")
ph.done(n=len(t.streamlines), points=int(data.shape[0]), checksum=f"{s:.1f}")
