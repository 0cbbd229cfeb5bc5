"""The layout docs/architecture.md describes: imports point one way (no cycles, none hidden inside
functions), the tricks are pure modules over torch and the leaf modules, and files stay small."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bof"
LEAVES = {"bof.boxes", "bof.atomic", "bof.published"}  # import nothing from bof


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def bof_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(imported bof module, line) for every import in ``tree``; ``from bof.x import y`` counts as bof.x.y
    when that is a module, else bof.x."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("bof")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bof"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in MODULES else node.module, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in bof_imports(ast.parse(path.read_text()))} - {name}
        for name, path in MODULES.items()
    }


def test_no_bof_import_inside_a_function_or_class():
    hidden = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                hidden += [f"{name}:{line} imports {target}" for target, line in bof_imports(node)]
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


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("bof.tricks.") or m in LEAVES))
def test_tricks_and_leaves_import_no_data_model_or_config(module):
    allowed = set() if module in LEAVES else LEAVES
    imported = graph()[module]
    assert imported <= allowed, f"{module} imports {sorted(imported - allowed)}"


def test_no_module_is_large():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 320, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
