"""The package's shape: modules import only downwards, in few layers, with no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tensorf"
MAX_LAYERS = 9


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from the source alone."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:  # `from tensorf import cli` names a module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's layer: 1 + the highest layer it imports (1 for one importing none).
    Raises on a cycle."""
    layer: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> int:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in layer:
            layer[name] = 1 + max((visit(m, (*path, name)) for m in graph[name]), default=0)
        return layer[name]

    for name in graph:
        visit(name, ())
    return layer


def test_imports_form_few_layers_without_cycles():
    layer = layers(imports())
    deepest = max(layer, key=layer.get)
    assert layer[deepest] <= MAX_LAYERS, sorted(layer.items(), key=lambda kv: kv[1])


def test_errors_and_bottom_modules_import_nothing_of_ours():
    graph = imports()
    for bottom in ("tensorf.errors", "tensorf.progress", "tensorf.data.location"):
        assert graph[bottom] == set(), (bottom, graph[bottom])


def test_the_layer_count_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        layers(graph)
    except AssertionError as error:
        assert "a -> b -> c -> a" in str(error)
    else:
        raise AssertionError("no cycle found")
