"""The prepared data in use: queries over a study's scans, and Local Tract Population
Analysis (termination patterns and the maps made of them).

- ``reader``: ``TrackDataSource`` (dsi2's interface), with ``results``, ``roi``, ``lookup``
  and ``querytext`` (query results, the query's voxels, the CSR lookup, ``ltpa query``'s text);
- ``patterns``: a scan's patterns (sphere, build, the versioned file;
  ``ltpa.jobs.pipeline.write_patterns`` runs it as a job);
- ``matrix``: ``PatternMatrix`` (one center, every scan) and ``StudyPatterns`` (a study's
  patterns under one atlas and radius, what ``TrackDataSource.termination_patterns`` gives);
- ``stats``: the built-in statistics, vectorized over blocks of centers;
- ``run``: ``run_ltpa`` and ``LtpaResult``;
- ``maps``: ``write_map`` (a study map to NIfTI, what ``ltpa map`` and the workflow run).
"""
