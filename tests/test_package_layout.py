"""The package's folders show its architecture (build side, read side, the store both share), its
modules import one another without a circle, and imports of the flat layout keep working."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cache_builder

PACKAGE = Path(cache_builder.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its text (top level, functions,
    ``TYPE_CHECKING`` blocks alike: a circle through a lazy import is still a circle)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (a depth-first search)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node: str, edges: dict[str, set[str]], out: list[str]) -> None:
        stack = [(node, iter(sorted(edges[node])))]
        seen.add(node)
        while stack:
            current, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                out.append(current)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(sorted(edges[child]))))

    for node in sorted(graph):
        if node not in seen:
            visit(node, graph, order)
    reverse: dict[str, set[str]] = {n: set() for n in graph}
    for node, targets in graph.items():
        for target in targets:
            reverse[target].add(node)
    seen.clear()
    components = []
    for node in reversed(order):
        if node not in seen:
            component: list[str] = []
            visit(node, reverse, component)
            components.append(sorted(component))
    return [c for c in components if len(c) > 1]


def test_the_top_folder_holds_the_two_sides_and_what_they_share():
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert top == ["__init__.py", "build", "layers.py", "read", "schemas", "store"]
    for side in ("build", "read"):
        assert (PACKAGE / side / "__init__.py").read_text(encoding="utf-8").startswith('"""The ')


def test_no_module_imports_itself_back_through_others():
    graph = _import_graph()
    assert graph["cache_builder.read.cache"] >= {"cache_builder.read.pooling", "cache_builder.read.interop"}
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_reading_a_store_loads_nothing_of_the_build_side():
    """A training script that only reads (``open_cache``, pooling, export) does not import the engine."""
    code = ("import sys; from cache_builder import open_cache; import cache_builder.read.pooling, "
            "cache_builder.read.interop, cache_builder.read.export, cache_builder.read.mix; "
            "print(sorted(m for m in sys.modules if m.startswith('cache_builder.build')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("old", sorted(cache_builder.MOVED))
def test_a_flat_name_gives_the_moved_module_with_a_warning(old):
    new = cache_builder.MOVED[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        module = __import__(old, fromlist=["_"])
    assert module is sys.modules[new]


def test_code_written_for_the_flat_layout_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from cache_builder.cache import EmbeddingCache, pad_collate
        from cache_builder.engine import PrecomputeSettings, precompute
    from cache_builder.build.engine import precompute as moved
    from cache_builder.read.cache import pad_collate as moved_collate

    assert precompute is moved and pad_collate is moved_collate
    assert EmbeddingCache is cache_builder.EmbeddingCache and PrecomputeSettings.__module__ == "cache_builder.build.settings"
