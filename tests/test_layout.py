"""The import graph (grimp, which import-linter is built on): no cycles, metrics at the bottom;
package `__init__` files hold a docstring and re-exports only.

The layer contract itself is in pyproject.toml ([tool.importlinter], `lint-imports` in `make
lint`); these tests pin what a list of layers alone does not: no loop among the modules of one
package either, and none through the packages. Imports made for type hints only (`if
TYPE_CHECKING:`) run nothing and are left out, as in the contract.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import grimp
import pytest

import gateway


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("gateway", cache_dir=None, exclude_type_checking_imports=True)


def arrows(graph: grimp.ImportGraph, unit: Callable[[str], str]) -> dict[str, set[str]]:
    """Who imports whom, each module named by `unit(module)`."""
    out: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if unit(module) != unit(imported):
                out[unit(module)].add(unit(imported))
    return out


def path(arrows: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    came_from: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        here = todo.popleft()
        if here == goal:
            walk: list[str] = []
            step: str | None = here
            while step is not None:
                walk.append(step)
                step = came_from[step]
            return walk[::-1]
        for there in sorted(arrows.get(here, ())):
            if there not in came_from:
                came_from[there] = here
                todo.append(there)
    return None


def loops(arrows: dict[str, set[str]]) -> list[list[str]]:
    """One loop per import that closes one: `a` imports `b`, and `b` leads back to `a`."""
    found = []
    for a in sorted(arrows):
        for b in sorted(arrows[a]):
            back = path(arrows, b, a)
            if back is not None:
                found.append([a, *back])
    return found


def package(module: str) -> str:
    """gateway.auth.login -> gateway.auth; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def test_loops_are_found_in_a_made_up_graph():
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert loops(made_up) == [["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"]]
    assert loops({"a": {"b"}, "b": {"c"}}) == []


def test_no_module_imports_itself_through_others(graph):
    assert loops(arrows(graph, lambda module: module)) == []


def test_no_package_imports_itself_through_others(graph):
    assert loops(arrows(graph, package)) == []


def test_metrics_imports_nothing_of_the_gateway(graph):
    assert graph.find_modules_directly_imported_by("gateway.metrics") == set()


def package_inits() -> list[Path]:
    return sorted(Path(gateway.__file__).parent.glob("**/__init__.py"))


@pytest.mark.parametrize("init", package_inits(), ids=lambda p: str(p.parent.name))
def test_a_package_init_holds_its_docstring_and_re_exports_only(init: Path):
    tree = ast.parse(init.read_text(encoding="utf-8"))
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    for statement in body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        names = [t.id for t in getattr(statement, "targets", []) if isinstance(t, ast.Name)]
        dunders = names and all(n.startswith("__") and n.endswith("__") for n in names)
        assert dunders, f"{init}:{statement.lineno}: not an import, __all__ or __version__"
