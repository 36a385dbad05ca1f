"""Mutation check: do the fast tests notice when the kernels, staleness or statistics are wrong?

Each mutant changes one operator or constant of one module (``<`` -> ``<=``, ``+`` -> ``-``,
``and`` -> ``or``, ``not x`` -> ``x``, ``n`` -> ``n + 1``, ``True`` -> ``False``, ...) in a
copy of ``src/`` (the checkout is never touched), then runs only the fast tests that cover
that module (``TESTS`` below) against the copy, first failure stops. A mutant no test kills
"survives": either a missing test or an equivalent change (say which in docs/testing.md).

    .venv/bin/python benchmarks/mutation.py --budget 1200 --sample 25 --seed 1

``--sample N`` draws N mutants per module (all with 0); ``--budget`` seconds stops the run
(the mutants not run are counted, not guessed). Numba kernels compile again for every
mutant of kernels.py (~10 s each), so those cost the most. Prints one line per mutant and
the survivors at the end; ``--out FILE`` writes them as Markdown too.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module -> the fast tests that cover it (pytest node ids or files, `-m "not slow"` applies)
TESTS = {
    "kernels.py": ["tests/test_index.py", "tests/test_labels.py", "tests/test_trk.py"],
    "study/staleness.py": ["tests/test_staleness.py", "tests/test_robustness.py::"
                     "test_sidecar_with_nul_or_surrogate_paths_makes_only_its_output_out_of_date",
                     "tests/test_robustness.py::test_staleness_paths_no_file_system_takes_are"
                     "_missing_files", "tests/test_robustness.py::test_sidecar_null_input_record"
                     "_for_a_field_the_job_does_not_have"],
    "qc/groupdiff.py": ["tests/test_groupdiff.py"],
    "prepared/labels.py": ["tests/test_labels.py", "tests/test_dsi2_inputs.py"],
    "prepared/index.py": ["tests/test_index.py"],
}

SWAP = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.And: ast.Or, ast.Or: ast.And,
}


def sites(tree):
    """Every (node, kind) a mutant can change, in a fixed walk order."""
    # annotations (not evaluated: `from __future__ import annotations`) and decorators
    # (numba's cache=True) hold no behaviour: mutants there would only be equivalent ones
    skip = set()
    for node in ast.walk(tree):
        parts = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [node.returns, *node.decorator_list]
        elif isinstance(node, ast.arg) or isinstance(node, ast.AnnAssign):
            parts = [node.annotation]
        elif isinstance(node, ast.ClassDef):
            parts = node.decorator_list
        for part in parts:
            if part is not None:
                skip.update(id(n) for n in ast.walk(part))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            out += [(node, ("cmp", i)) for i, op in enumerate(node.ops) if type(op) in SWAP]
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAP:
            out.append((node, ("op",)))
        elif isinstance(node, ast.BoolOp):
            out.append((node, ("bool",)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            out.append((node, ("unary",)))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, bool):
            out.append((node, ("const",)))
    return out


class _Unary(ast.NodeTransformer):
    def __init__(self, target):
        self.target = target

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return node.operand if node is self.target else node


def mutate(source: str, k: int) -> tuple[str, int, str] | None:
    """The source with site ``k`` changed, its line and a description; None if unchanged."""
    tree = ast.parse(source)
    node, kind = sites(tree)[k]
    line = node.lineno
    if kind[0] == "cmp":
        op = node.ops[kind[1]]
        node.ops[kind[1]] = SWAP[type(op)]()
        what = f"{type(op).__name__} -> {type(node.ops[kind[1]]).__name__}"
    elif kind[0] in ("op", "bool"):
        op = node.op
        node.op = SWAP[type(op)]()
        what = f"{type(op).__name__} -> {type(node.op).__name__}"
    elif kind[0] == "unary":
        what = f"drop {type(node.op).__name__}"
        tree = _Unary(node).visit(tree)
    else:
        old = node.value
        node.value = (not old) if isinstance(old, bool) else old + 1
        what = f"{old!r} -> {node.value!r}"
    text = ast.unparse(ast.fix_missing_locations(tree))
    if text == ast.unparse(ast.parse(source)):
        return None
    return text, line, what


def run_tests(src_copy: Path, tests, timeout: float) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src_copy), NUMBA_CACHE_DIR=str(src_copy / ".nb"),
               PYTHONDONTWRITEBYTECODE="1")
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow",
                               "-p", "no:cacheprovider", *tests], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.time() - t0
    state = "survived" if proc.returncode == 0 else "killed"
    if proc.returncode not in (0, 1):
        state = f"killed (pytest exit {proc.returncode})"
    return state, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", default=",".join(TESTS), help="comma-separated, of: "
                    + ", ".join(TESTS) + " (default: all)")
    ap.add_argument("--sample", default="0",
                    help="mutants drawn per module (0: all; default 0), one number or "
                         "module=N pairs, e.g. staleness.py=20,kernels.py=10")
    ap.add_argument("--seed", type=int, default=1, help="for --sample (default 1)")
    ap.add_argument("--budget", type=float, default=1200,
                    help="stop after this many seconds (default 1200)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="per-mutant test time limit in seconds (default 300)")
    ap.add_argument("--out", help="also write the results as Markdown to this file")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    sample = ({"*": int(args.sample)} if "=" not in args.sample else
              {k: int(v) for k, v in (x.split("=") for x in args.sample.split(","))})
    plan = []
    for name in args.modules.split(","):
        source = (REPO / "src" / "ltpa" / name).read_text()
        ks = list(range(len(sites(ast.parse(source)))))
        n = sample.get(name, sample.get("*", 0))
        if n:
            ks = sorted(rng.sample(ks, min(n, len(ks))))
        print(f"{name}: {len(sites(ast.parse(source)))} sites, running {len(ks)}", flush=True)
        plan += [(name, k) for k in ks]
    rng.shuffle(plan)  # a budget that runs out leaves every module sampled, not the last bare
    t_start = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="ltpa-mutation-") as tmp:
        copy_root = Path(tmp) / "src"
        shutil.copytree(REPO / "src", copy_root,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        # the copy must be what the tests import, not the editable install
        check = subprocess.run([sys.executable, "-c", "import ltpa; print(ltpa.__file__)"],
                               env=dict(os.environ, PYTHONPATH=str(copy_root)),
                               capture_output=True, text=True, check=True).stdout.strip()
        if not check.startswith(str(copy_root)):
            sys.exit(f"mutation: the tests would import {check}, not the mutated copy")
        for name, k in plan:
            if time.time() - t_start > args.budget:
                break
            original = (REPO / "src" / "ltpa" / name).read_text()
            mutant = mutate(original, k)
            if mutant is None:
                continue
            text, line, what = mutant
            target = copy_root / "ltpa" / name
            target.write_text(text)
            try:
                state, secs = run_tests(copy_root, TESTS[name], args.timeout)
            finally:
                target.write_text(original)
            src_line = original.splitlines()[line - 1].strip()
            results.append((name, line, what, src_line, state, secs))
            print(f"{state:>9}  {name}:{line}  {what}  | {src_line[:70]}  ({secs:.0f} s)",
                  flush=True)
    ran = len(results)
    survivors = [r for r in results if r[4] == "survived"]
    print(f"\n{ran} mutants run of {len(plan)} planned in {time.time() - t_start:.0f} s: "
          f"{ran - len(survivors)} killed, {len(survivors)} survived")
    for name, line, what, src_line, _, _ in survivors:
        print(f"  survived: {name}:{line}  {what}  | {src_line}")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(f"{ran} mutants run of {len(plan)} planned, {len(survivors)} survived\n\n")
            fh.write("| module:line | mutation | source line |\n|---|---|---|\n")
            for name, line, what, src_line, _, _ in survivors:
                fh.write(f"| {name}:{line} | {what} | `{src_line}` |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
