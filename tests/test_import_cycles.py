"""No import cycles between embedtune modules, found by parsing the sources (nothing is imported).

A cycle hides which module is the lower layer and breaks as soon as one side imports the other at module level, so
function-local imports count too; only ``if TYPE_CHECKING:`` bodies, which never run, are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[1] / "platform"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of ``package`` under ``root``."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Collects the package-internal modules one file imports, anywhere in it except ``if TYPE_CHECKING:``."""

    def __init__(self, module: str, is_package: bool, modules: dict[str, Path], package: str) -> None:
        self.module, self.is_package, self.modules, self.package = module, is_package, modules, package
        self.found: set[str] = set()

    def _resolve(self, name: str) -> str | None:
        """The longest prefix of ``name`` that is a known module (``a.b.func`` -> ``a.b``)."""
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        return name or None

    def _ours(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._ours(alias.name):
                self.found.add(self._resolve(alias.name) or alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if not self._ours(source):
            return
        for alias in node.names:
            full = f"{source}.{alias.name}"
            target = full if full in self.modules else self._resolve(source)
            if target:
                self.found.add(target)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package modules it imports (self-imports dropped)."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py", modules, package)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = visitor.found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"{' <-> '.join(component)} ({'; '.join(edges)})"


def test_no_import_cycles_between_embedtune_modules() -> None:
    graph = import_graph(PLATFORM, "embedtune")
    assert len(graph) > 50  # the scan really saw the package
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(c, graph) for c in found)


def test_comparison_bundle_does_not_reach_up_to_the_experiment_driver() -> None:
    """``realtime.compare_bundle`` writes a bundle in the experiment's layout from lower modules only."""
    graph = import_graph(PLATFORM, "embedtune")
    seen: set[str] = set()
    pending = ["embedtune.realtime.compare_bundle"]
    while pending:
        for target in graph[pending.pop()] - seen:
            seen.add(target)
            pending.append(target)
    assert "embedtune.experiment" not in seen


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    """A two-module cycle (one side a relative, function-local import) is found; a TYPE_CHECKING import is not."""
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from toy import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.a import x\n")
    (pkg / "d.py").write_text("import toy.c\n")
    graph = import_graph(tmp_path, "toy")
    assert graph["toy.a"] == {"toy.b"} and graph["toy.b"] == {"toy.a"} and graph["toy.c"] == set()
    assert graph["toy.d"] == {"toy.c"}
    assert cycles(graph) == [["toy.a", "toy.b"]]
