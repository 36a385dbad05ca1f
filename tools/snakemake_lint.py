"""`snakemake --lint` of the workflow, failing on every lint but the one this workflow declines.

Snakemake asks each rule for a conda environment or a container ("Specify a conda environment
or container for each rule."). This workflow's jobs run in the driver's environment: the
software is the ltpa package and its dependencies, listed once, in pyproject.toml (a conda
env per rule would be a second list, and the jobs would not use it: ltpa-job runs with the
driver's Python). That lint is reported as a note; any other lint, of a rule or a Snakefile,
fails (exit 1), as does a Snakemake that cannot parse the workflow.

The workflow reads its study when it is parsed, so the lint runs on the small built-in demo
study (``ltpa demo --small``), written to a temporary folder.

Usage: python tools/snakemake_lint.py [snakemake options...]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

DECLINED = "Specify a conda environment or container for each rule."
# "Lints for rule NAME (line N, FILE):" / "Lints for snakefile FILE:", then "    * TITLE:" lines
HEADER = re.compile(r"^Lints for (?P<what>.+):$")
TITLE = re.compile(r"^    \* (?P<title>.+?):$")


def lints(text: str) -> list[tuple[str, str]]:
    """(what, title) of every lint in ``snakemake --lint``'s text output."""
    out, what = [], None
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            what = m.group("what")
            continue
        m = TITLE.match(line)
        if m and what is not None:
            out.append((what, m.group("title")))
    return out


def run_lint(argv) -> subprocess.CompletedProcess:
    """``snakemake --lint`` of this repository's workflow on a small demo study."""
    from ltpa.demo.small import make_demo

    repo = Path(__file__).resolve().parents[1]
    snakemake = Path(sys.executable).parent / "snakemake"
    with tempfile.TemporaryDirectory(prefix="ltpa-lint-") as tmp:
        local_data = make_demo(Path(tmp) / "study", n_scans=3)
        return subprocess.run([str(snakemake), "-s", str(repo / "workflow" / "Snakefile"),
                               "-d", str(Path(tmp) / "work"), "--lint", *argv,
                               "--config", f"local_data={local_data}"],
                              capture_output=True, text=True)


def main(argv=None) -> int:
    proc = run_lint(list(argv or []))
    text = proc.stdout + proc.stderr
    found = lints(text)
    declined = sorted({what for what, title in found if title == DECLINED})
    others = [(what, title) for what, title in found if title != DECLINED]
    parsed = "Congratulations" in text or found
    if others or not parsed:
        print(text, end="")
        print(f"snakemake --lint: {len(others)} lint(s) to fix" if parsed else
              f"snakemake --lint did not run (exit {proc.returncode})", file=sys.stderr)
        return 1
    if declined:
        print(f"snakemake --lint: clean but for {len(declined)} rules without a conda env or "
              f"container (jobs run in the driver's environment: see {Path(__file__).name})")
    else:
        print("snakemake --lint: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
