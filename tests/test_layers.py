"""The package's two layers: teaching helpers (``labkit.<topic>``) never import the course's
machinery (``labkit.course``), at the top of a module or inside a function; and no modules
import each other in a cycle. Read from the source (AST), so a lazy import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "labkit"
#: ``python -m labkit`` runs the course's command line: the one entry point allowed to.
ENTRY_POINTS = {"labkit.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The labkit modules a file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("labkit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labkit"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def test_the_tree_shows_the_two_layers():
    """Topic modules at the top, the machinery in one subpackage."""
    names = set(modules())
    assert "labkit.course" in names, "the course's machinery lives in src/labkit/course/"
    for machinery in ("services", "grading", "nbgrader_ext", "selfcheck", "progress", "cli"):
        assert f"labkit.course.{machinery}" in names, machinery
        assert f"labkit.{machinery}" not in names, f"labkit.{machinery} belongs in labkit.course"


def test_helpers_never_import_the_machinery():
    """No teaching helper imports labkit.course, even lazily inside a function."""
    offenders = {
        name: sorted(target for target in targets if target.startswith("labkit.course"))
        for name, targets in graph().items()
        if not name.startswith("labkit.course") and name not in ENTRY_POINTS
    }
    offenders = {name: targets for name, targets in offenders.items() if targets}
    assert not offenders, f"helpers that import the course's machinery: {offenders}"


def test_no_import_cycles():
    """No module reaches itself through its imports."""
    edges = {
        name: {t for t in targets if t != "labkit"} for name, targets in graph().items()
    }  # every module imports the package itself: that is no cycle
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for target in sorted(edges.get(node, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(edges):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_checks_see_a_lazy_import(tmp_path):
    """The AST reading finds an import inside a function body (so the rules can fail)."""
    path = tmp_path / "helper.py"
    path.write_text("def f():\n    from labkit.course import grading\n    return grading\n")
    assert imports(path, {"labkit.course", "labkit.course.grading"}) == {"labkit.course.grading"}
