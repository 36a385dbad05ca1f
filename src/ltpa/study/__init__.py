"""The study: local_data.json -> records, config, targets and job specs, staleness, sidecars,
the header cache, resources, status and provenance."""
