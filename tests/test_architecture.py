"""The shape of the package, read from the source with ``ast``: no import cycle between flairkit's packages,
layers that stay one-way, and output left to the CLI.

Every import counts, wherever it stands: at module level, inside a function or under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import flairkit

SOURCE = Path(flairkit.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, ast.Module]:
    """Every module of src/flairkit, parsed."""
    found = {module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in SOURCE.rglob("*.py")}
    assert len(found) > 50, f"only {len(found)} modules found under {SOURCE}"
    return found


def _imported(name: str, tree: ast.Module) -> Iterator[str]:
    """Every module ``name`` imports (``from a import b`` yields ``a``, and ``a.b`` when b is a module)."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules())


def _is_package(name: str) -> bool:
    return (SOURCE.parent / name.replace(".", "/") / "__init__.py").is_file()


@cache
def module_graph() -> dict[str, frozenset[str]]:
    """flairkit module -> the flairkit modules it imports."""
    return {
        name: frozenset(target for target in _imported(name, tree) if target in modules() and target != name)
        for name, tree in modules().items()
    }


def package_of(module: str) -> str:
    """``flairkit.<first part>``: a subpackage, or a top-level module such as flairkit.devices."""
    return ".".join(module.split(".")[:2])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def reachable(start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in module_graph()[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _edges_between(source: str, target: str) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in module_graph().items()
        for b in targets
        if package_of(a) == source and package_of(b) == target
    )


def test_the_package_graph_has_no_cycle():
    packages: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        packages.setdefault(package_of(module), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(module)
        )
    cycle = find_cycle(packages)
    if cycle:
        edges = [edge for a, b in itertools.pairwise(cycle) for edge in _edges_between(a, b)]
        pytest.fail(f"import cycle between packages {' -> '.join(cycle)}:\n  " + "\n  ".join(edges))


def test_find_cycle_sees_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("flairkit.evaluation", ("flairkit.training",)),
        ("flairkit.models.weights", ("flairkit.models.export", "flairkit.models.onnx", "flairkit.models.loader")),
    ],
)
def test_layers_are_one_way(layer, forbidden):
    """Evaluation runs networks without the training code; weights files know nothing of ONNX or export."""
    offending = {
        f"{module} reaches {target}"
        for module in module_graph()
        if module == layer or module.startswith(f"{layer}.")
        for target in reachable(module)
        if any(target == f or target.startswith(f"{f}.") for f in forbidden)
    }
    assert not offending, "\n".join(sorted(offending))


def test_the_graph_sees_imports_inside_functions():
    assert "flairkit.models.zoo" in module_graph()["flairkit.models.weights.sources"]


def _output_calls(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            yield node.lineno, "print()"
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr"):
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                yield node.lineno, f"sys.{node.attr}"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(name == "rich" or name.startswith("rich.") for name in names):
                yield node.lineno, "rich"


def test_only_the_cli_prints():
    """Library functions return values and report progress through callbacks or logging; the CLI renders them."""
    offending = [
        f"{name}:{line} uses {what}"
        for name, tree in modules().items()
        if not (name == "flairkit.cli" or name.startswith("flairkit.cli."))
        for line, what in _output_calls(tree)
    ]
    assert not offending, "\n".join(offending)
    assert list(_output_calls(modules()["flairkit.cli.common"])), "the check no longer sees the CLI's own console"
