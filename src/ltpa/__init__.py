"""ltpa-prep: per-subject data for Local Tract Population Analysis."""

__version__ = "0.1.0"

from .dataset import TrackDataset, VoxelIndex, load_track_dataset  # noqa: E402
from .errors import LtpaError  # noqa: E402

__all__ = ["TrackDataset", "VoxelIndex", "load_track_dataset", "LtpaError", "__version__"]
