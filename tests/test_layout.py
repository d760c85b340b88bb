"""The package's shape: modules import only downwards, in few layers, with no cycles; the
subpackages import only those declared below them; no module or function is long."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tensorf"
MAX_LAYERS = 9
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# The package's parts, lowest first: a module imports from its own part and the parts
# below it, never from one above. Parts on one line stand side by side.
PARTS = [
    ("errors", "progress", "outputs", "safe_json", "cli"),  # what every part may use
    ("geometry",),  # cameras, paths, distortion, NDC, contraction
    ("data",),  # one loader per format
    ("capture",),  # posing photos or a video
    ("config", "config_json", "presets"),
    ("parallel",),  # the device mesh
    ("field",),  # grids, MLP, alpha mask
    ("render",),  # settings, marching, images, frames
    ("train",),  # state, rays, the step, grid events, checkpoints
    ("eval",),  # metrics and evaluations
    ("loop",),  # the training loop's parts
    ("viewer",),  # the browser viewer
    ("experiment", "evaluate", "export_mesh", "orbit", "process"),  # the command lines
]


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


def part(module: str) -> int:
    """The index in PARTS of the part a module belongs to (its first name under tensorf)."""
    name = module.split(".")[1]
    return next(i for i, names in enumerate(PARTS) if name in names)


def test_every_module_has_a_part_and_none_imports_upwards():
    graph = imports()
    modules = [m for m in graph if m != "tensorf"]
    unplaced = [m for m in modules if all(m.split(".")[1] not in p for p in PARTS)]
    assert unplaced == [], f"modules of no declared part: {unplaced}"
    upward = sorted(
        f"{m} -> {i}" for m in modules for i in graph[m] if i != "tensorf" and part(i) > part(m)
    )
    assert upward == [], upward


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append((module_name(path), len(source.splitlines())))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append((f"{module_name(path)}.{node.name}", length))
    assert long_modules == [], long_modules
    assert long_functions == [], long_functions


def test_the_part_check_sees_an_upward_import():
    assert part("tensorf.render.march") < part("tensorf.train.steps")
    assert part("tensorf.errors") == part("tensorf.cli") == 0
    assert part("tensorf.orbit") == len(PARTS) - 1
