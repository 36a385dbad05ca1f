"""The package's layout as docs/architecture.md draws it, checked from the source itself:
no import cycles, no import upwards between folders, no module holding more than ~700 lines
of code, and every public function documented with numpydoc sections."""

import ast

import networkx as nx
import pytest

from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "ltpa"
# the folders (and top-level modules) from the bottom up, as docs/architecture.md draws
# them: each may import only from a lower rank (or from itself)
RANK = {
    "errors": 0, "ltpa": 1, "io": 1, "kernels": 1, "clihelp": 1, "progress": 1,
    "formats": 2, "prepared": 3, "dataset": 4, "demo": 4, "study": 5, "qc": 6,
    "jobs": 7, "analysis": 7, "workflow_glue": 8, "cli": 8, "__main__": 9,
}
MAX_CODE_LINES = 700


def modules():
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name, path, known):
    """The package's own modules ``name`` imports, at module top or inside functions."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "ltpa" or target.startswith("ltpa."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ltpa"}
    return {m for m in found if m in known and m != name}


def unit(module):
    """The folder or top-level module of ``ltpa.x.y``: ``x`` (``ltpa`` for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ltpa"


@pytest.fixture(scope="module")
def graph():
    known = modules()
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for name, path in known.items():
        g.add_edges_from((name, target) for target in imports_of(name, path, known))
    return g


def test_the_import_graph_has_no_cycle(graph):
    assert graph.number_of_edges() > 100  # the graph was read
    assert list(nx.simple_cycles(graph)) == []


def test_no_folder_imports_upwards(graph):
    assert set(map(unit, graph.nodes)) == set(RANK), "a folder missing from RANK"
    upward = [f"{a} -> {b}" for a, b in graph.edges
              if unit(a) != unit(b) and RANK[unit(a)] <= RANK[unit(b)]]
    assert upward == []


def code_lines(path):
    """Lines of code: neither blank, nor a comment, nor part of a docstring."""
    text = path.read_text()
    doc = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef)) and ast.get_docstring(node) is not None:
            first = node.body[0]
            doc.update(range(first.lineno, first.end_lineno + 1))
    return sum(1 for i, line in enumerate(text.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in doc)


def test_no_module_holds_more_than_700_lines_of_code():
    sizes = {p.relative_to(SRC).as_posix(): code_lines(p) for p in modules().values()}
    assert max(sizes.values()) > 300  # counted
    assert {p: n for p, n in sizes.items() if n > MAX_CODE_LINES} == {}


def _own_returns(fn):
    """Whether ``fn`` itself (not a function nested in it) returns a value or yields."""
    nested = [n for n in ast.walk(fn) if n is not fn
              and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
    inner = {id(x) for n in nested for x in ast.walk(n)}
    return any(id(n) not in inner and (
        (isinstance(n, ast.Return) and n.value is not None
         and not (isinstance(n.value, ast.Constant) and n.value.value is None))
        or isinstance(n, (ast.Yield, ast.YieldFrom))) for n in ast.walk(fn))


def undocumented(path, root=SRC):
    """Public functions and methods of ``path`` whose docstring lacks a numpydoc section it
    needs: Parameters (when it takes any), Returns or Yields (when it gives a value)."""
    out = []

    def visit(node, private):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, ast.ClassDef):
                visit(n, private or n.name.startswith("_"))
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if private or n.name.startswith("_"):
                    continue
                a = n.args
                params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs
                          if x.arg not in ("self", "cls")]
                params += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                doc = ast.get_docstring(n) or ""
                missing = [] if doc else ["docstring"]
                if params and "Parameters\n" not in doc:
                    missing.append("Parameters")
                prop = any(getattr(d, "id", None) == "property" for d in n.decorator_list)
                if (_own_returns(n) and not prop and "Returns\n" not in doc
                        and "Yields\n" not in doc):
                    missing.append("Returns")
                if missing:
                    out.append(f"{path.relative_to(root)}:{n.lineno} {n.name}: "
                               f"{', '.join(missing)}")

    visit(ast.parse(path.read_text()), False)
    return out


def test_every_public_function_has_its_numpydoc_sections():
    missing = [line for p in modules().values() for line in undocumented(p)]
    assert missing == []


def test_the_docstring_check_finds_what_is_missing(tmp_path):
    """The check above on a module written here: it names exactly the gaps."""
    f = tmp_path / "m.py"
    f.write_text(
        'def ok(x):\n    """Fine.\n\n    Parameters\n    ----------\n    x : int\n        X.\n\n'
        '    Returns\n    -------\n    int\n        X.\n    """\n    return x\n\n\n'
        'def bare(x):\n    return x\n\n\n'
        'def no_return_section(x):\n    """Summary.\n\n    Parameters\n    ----------\n'
        '    x : int\n        X.\n    """\n    def inner():\n        return 1\n'
        '    return inner\n\n\n'
        'def _private(x):\n    return x\n\n\n'
        'class C:\n    def method(self):\n        """Nothing to return."""\n\n'
        '    @property\n    def prop(self):\n        """A property."""\n        return 1\n')
    assert undocumented(f, root=tmp_path) == [
        "m.py:17 bare: docstring, Parameters, Returns", "m.py:21 no_return_section: Returns"]
