"""Local Tract Population Analysis: termination patterns and the maps made of them.

- ``patterns``: a scan's patterns (sphere, build, the versioned file;
  ``ltpa.pipeline.write_patterns`` runs it as a job);
- ``matrix``: ``PatternMatrix`` (one center, every scan) and ``StudyPatterns`` (a study's
  patterns under one atlas and radius, what ``TrackDataSource.termination_patterns`` gives);
- ``stats``: the built-in statistics, vectorized over blocks of centers;
- ``run``: ``run_ltpa`` and ``LtpaResult``;
- ``maps``: ``write_map`` (a study map to NIfTI, what ``ltpa map`` and the workflow run).
"""
