"""The house rules of DESIGN.md that a machine can check, on the source itself (``ast``, nothing imported):

- no import circle among the project's modules, lazy (function-level) imports and importlib's
  ``import_module`` of a module named in the file included;
- no module imports another module's private name (``from .x import _y``);
- the library never imports the viewer.

``python tests/test_structure.py`` prints the import graph (module -> the project modules it imports).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: source folder -> the name it is installed under (pyproject's package-dir)
PACKAGES = {"pv3d_core": "pv3d_core", "viewer": "pv3d_viewer"}


def project_modules() -> dict[str, Path]:
    out = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict) -> list[tuple[str, str | None, int]]:
    """(imported project module, name imported from it or None, line) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []

    def local(name: str) -> str | None:
        for folder, installed in PACKAGES.items():       # the source folder name means the installed one
            if name == folder or name.startswith(folder + "."):
                name = installed + name[len(folder):]
        return name if name in known else None

    strings = {}                  # constant strings bound to names anywhere in the module (PLUGINS = [...])
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and local(node.value):
            strings[node.value] = node.lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            # importlib.import_module: a literal argument, or any project module named by a string here
            arg = node.args[0] if node.args else None
            names = [arg.value] if isinstance(arg, ast.Constant) else list(strings)
            found += [(local(n), None, node.lineno) for n in names if local(n)]
        if isinstance(node, ast.Import):
            for a in node.names:
                m = local(a.name)
                if m:
                    found.append((m, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            for a in node.names:
                sub = local(f"{base}.{a.name}")
                if sub:                                    # `from pkg import submodule`
                    found.append((sub, None, node.lineno))
                elif local(base):
                    found.append((local(base), a.name, node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> imported project modules, private-name imports as messages)."""
    known = project_modules()
    graph, private = {}, []
    for module, path in known.items():
        graph[module] = set()
        for target, name, line in imports(module, path, known):
            if target != module:
                graph[module].add(target)
            if name and name.startswith("_") and not name.startswith("__") and target != module:
                private.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {target}")
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_lazy_imports_included():
    graph, _ = import_graph()
    assert len(graph) > 60                      # the whole project was read
    assert cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    _, private = import_graph()
    assert private == []


def test_the_library_never_imports_the_viewer():
    graph, _ = import_graph()
    bad = {m: sorted(t for t in ts if t.startswith("pv3d_viewer")) for m, ts in graph.items() if m.startswith("pv3d_core")}
    assert not {m: t for m, t in bad.items() if t}


def test_the_checker_sees_circles_and_private_names(tmp_path, monkeypatch):
    """The checks above can fail: a planted lazy circle and a private import are found."""
    pkg = tmp_path / "pv3d_core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from . import a\n    from .a import _secret\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", {"pv3d_core": "pv3d_core"})
    graph, private = import_graph()
    assert cycles(graph) == [["pv3d_core.a", "pv3d_core.b"]]
    assert private == ["pv3d_core/b.py:3 imports _secret from pv3d_core.a"]


if __name__ == "__main__":
    g, p = import_graph()
    for m in sorted(g):
        print(f"{m} -> {', '.join(sorted(g[m])) or '-'}")
    print("cycles:", cycles(g) or "none", "| private imports:", p or "none")
