"""ltpa-prep: per-subject data for Local Tract Population Analysis."""

__version__ = "0.1.0"

from .errors import LtpaError  # noqa: E402

__all__ = ["TrackDataset", "VoxelIndex", "load_track_dataset", "TrackDataSource", "LtpaError",
           "run_ltpa", "LtpaResult", "PatternMatrix", "__version__"]

# the heavy parts (numpy, nibabel) load on first use, so that `ltpa-job` (ltpa.jobs.client)
# starts in milliseconds
_LAZY = {"TrackDataset": "dataset", "VoxelIndex": "dataset", "load_track_dataset": "dataset",
         "TrackDataSource": "analysis.reader", "run_ltpa": "analysis.run",
         "LtpaResult": "analysis.run", "PatternMatrix": "analysis.matrix"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ltpa' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
