"""dipy.tracking.vox2track.streamline_mapping on the streamlines loaded by nibabel.

nibabel gives RAS mm (voxel centres at integer voxel coords); streamline_mapping with
affine = the TrackVis vox_to_ras (== the QSDR affine) computes trunc(inv(A) @ x + 0.5),
which equals floor(voxmm / voxel_size) up to float32 rounding.  Figure includes load.
Usage: dipy_mapping.py TRK
"""
import sys

from _common import Phases, skip

ph = Phases()
try:
    from dipy.tracking.vox2track import streamline_mapping
except Exception as e:  # pragma: no cover
    skip(f"dipy not importable ({type(e).__name__}: {e})")
# after Phases(): the imports are the timed "import" phase
import dipy  # noqa: E402
import nibabel as nib  # noqa: E402

ph.mark("import")
t = nib.streamlines.load(sys.argv[1])
ph.mark("load")
m = streamline_mapping(t.streamlines, affine=t.affine)
ph.mark("mapping")
ph.done(voxels=len(m), dipy=dipy.__version__)
