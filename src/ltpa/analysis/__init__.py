"""The prepared data in use: queries over a study's scans, and Local Tract Population
Analysis (the maps made of the scans' termination patterns).

- ``reader``: ``TrackDataSource`` (dsi2's interface), with ``results``, ``roi``, ``lookup``
  and ``querytext`` (query results, the query's voxels, the CSR lookup, ``ltpa query``'s text);
- ``matrix``: ``PatternMatrix`` (one center, every scan) and ``StudyPatterns`` (a study's
  patterns under one atlas and radius, what ``TrackDataSource.termination_patterns`` gives),
  read from the per-scan pattern files of ``ltpa.prepared.patterns``;
- ``stats``: the built-in statistics, vectorized over blocks of centers;
- ``run``: ``run_ltpa`` and ``LtpaResult``;
- ``maps``: ``write_map`` (a study map to NIfTI, what ``ltpa map`` runs);
- ``maps_workflow``: the workflow's study maps (config ``maps``): their jobs, staleness,
  ``ltpa status``'s lines and the report's top table.
"""
