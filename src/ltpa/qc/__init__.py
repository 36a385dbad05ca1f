"""Quality control of the outputs: per-scan and study tables, group differences, the report's
plots and the end-of-run summary."""
