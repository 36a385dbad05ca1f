"""Running jobs: the job description's runner, the warm job server, its client (``ltpa-job``).

Kept empty: ``ltpa-job`` imports ``ltpa.jobs.client``, which must start in milliseconds."""
