"""The layout docs/architecture.md describes: the folders are the layers, and imports point down their
order (importlib calls included, so a deferred import cannot hide an edge); no cycles; no bof import hidden
inside a function; the tricks are pure modules over torch and utils; files stay small."""

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "src" / "bof"
# docs/architecture.md, top to bottom: a module imports its own layer and the layers below it, never a
# layer above it or beside it (data and models are siblings, as are evaluation, tricks and config)
LAYERS = {
    "cli": 8,
    "train": 7,
    "pretrained": 6,
    "classify": 5,
    "engine": 4,
    "data": 3,
    "models": 3,
    "evaluation": 2,
    "tricks": 2,
    "config": 2,
    "utils": 1,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """``bof.engine.loops`` -> ``engine``; ``bof`` (the package itself) -> ``bof``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bof"


def is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: runs only when the module is the entry point, never when imported."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def importing_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under an ``if __name__ == "__main__":`` block."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack += [child for child in ast.iter_child_nodes(node) if not is_main_guard(child)]


def bof_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(imported bof module, line) for every import in ``tree``: ``import``, ``from bof.x import y``
    (bof.x.y when that is a module, else bof.x) and ``importlib.import_module("bof.x")``."""
    found = []
    for node in importing_nodes(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("bof")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bof"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in MODULES else node.module, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith("bof")
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in bof_imports(ast.parse(path.read_text()))} - {name}
        for name, path in MODULES.items()
    }


def test_every_module_lives_in_a_documented_layer():
    documented = set(LAYERS) | {"bof"}
    assert {layer(m) for m in MODULES} <= documented, sorted({layer(m) for m in MODULES} - documented)
    architecture = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    assert all(f"`{name}" in architecture for name in LAYERS), "docs/architecture.md must list every layer"


def test_imports_point_down_the_layers():
    upward = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if layer(target) != layer(module) and LAYERS.get(layer(target), 0) >= LAYERS.get(layer(module), 0)
    ]
    assert not upward, upward


def test_nothing_imports_the_console_scripts():
    importers = [f"{m} imports {t}" for m, ts in graph().items() for t in ts if layer(t) == "cli" != layer(m)]
    assert not importers, importers


def test_no_bof_import_inside_a_function_or_class():
    hidden = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in importing_nodes(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                hidden += [
                    f"{name}:{line} imports {target}"
                    for target, line in bof_imports(node)
                    # the one deferred import: bof-train's entry point loads the job only when it runs
                    if (name, target) != ("bof.cli.train", "bof.train")
                ]
    assert not hidden, hidden


def test_the_import_graph_has_no_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in {"tricks", "utils"}))
def test_tricks_and_utils_import_no_data_model_or_config(module):
    imported = {layer(target) for target in graph()[module]}
    allowed = {"utils", layer(module)}
    assert imported <= allowed, f"{module} imports from {sorted(imported - allowed)}"


def test_the_checker_sees_an_importlib_edge_and_skips_a_main_block():
    tree = ast.parse(
        'import importlib\nimportlib.import_module("bof.cli.train")\n'
        'if __name__ == "__main__":\n    from bof.cli.report import cli\n'
    )
    assert [target for target, _ in bof_imports(tree)] == ["bof.cli.train"]


def test_no_module_is_large():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 320, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
