"""One demo study run through the whole workflow (QC, plots, report), shared by the QC and
report tests (read-only: tests must not change it)."""

from pathlib import Path

from conftest import run_snakemake

_BUILT = {}


def built_study(tmp_path_factory):
    """(workdir, local_data.json, study folder) after a full run; made once per session."""
    if "study" not in _BUILT:
        from ltpa.demo import make_demo

        root = tmp_path_factory.mktemp("qc_study")
        local_data = make_demo(root / "study", n_scans=3, seed=1, n_per_side=15, n_background=10)
        work = root / "work"
        run_snakemake(work, local_data=local_data, qc=True)
        _BUILT["study"] = (work, Path(local_data), Path(local_data).parent)
    return _BUILT["study"]
