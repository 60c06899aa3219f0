"""The package's import graph has no circles (issue 24): every ``import`` and ``from ... import`` of
nitro_mcu/**.py, at module level or inside a function, read with ast.  ``from pkg import sub`` of a submodule
is an edge to the submodule only (the package's __init__ always runs first, by Python's rules, so it is not
counted as a dependency of its own submodules)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nitro_mcu"


def modules(root: Path = PKG) -> dict:
    out = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph(root: Path = PKG) -> dict:
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods}
                deps |= subs
                if len(subs) < len(node.names):
                    deps.add(mod)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_import_graph_has_no_circles():
    graph = import_graph()
    assert "nitro_mcu.cli" in graph and "nitro_mcu.trainer.recipes" in graph["nitro_mcu.spec"]  # it reads the code
    assert cycles(graph) == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles(graph))


@pytest.mark.parametrize("source,expected", [
    ({"a.py": "from . import b\n", "b.py": "def f():\n    from .a import x\n"}, [["pkg.a", "pkg.b"]]),
    ({"a.py": "from . import b\n", "b.py": "from . import c\n", "c.py": "import pkg.a\n"}, [["pkg.a", "pkg.b", "pkg.c"]]),
    ({"__init__.py": "from .a import f\n", "a.py": "from . import b\n", "b.py": "x = 1\n"}, []),
])
def test_the_circle_finder_sees_function_level_and_long_circles(tmp_path, source, expected):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, text in source.items():
        (root / name).write_text(text)
    assert cycles(import_graph(root)) == expected
