"""The package layering: lower layers never import higher ones, and no two modules import each other.

Every import statement counts, also the ones inside functions: a lazy import that closes a cycle
is still a cycle for whoever follows the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top. autoencoder/ (models, losses, training loop, model folders) sits below processing/.
LAYERS = [
    "autoencoder",
    "processing.data",
    "processing.maps",
    "processing.decision",
    "processing.evaluation",
    "processing.detectors",
    "processing.workflow",
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for package in ("autoencoder", "processing") for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (resolving `from package import module`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in modules else node.module for name in names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def layer_of(module: str) -> int:
    matches = [index for index, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")]
    return max(matches) if matches else len(LAYERS)  # processing/__init__ and the like: the top


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_every_module_belongs_to_a_layer():
    unplaced = [name for name in package_modules() if layer_of(name) == len(LAYERS) and name not in ("processing",)]
    assert unplaced == []


def test_lower_layers_do_not_import_higher_ones():
    upward = [
        f"{module} ({LAYERS[layer_of(module)]}) imports {target} ({LAYERS[layer_of(target)]})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            # A package's __init__ importing its own submodules is how a registry fills itself.
            if target.startswith(module + "."):
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a file with a lazy upward import is caught."""
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from processing.workflow.testing import test\n")
    modules = package_modules()
    assert imports_of(source, modules) == {"processing.workflow.testing"}
    assert layer_of("processing.workflow.testing") > layer_of("processing.maps.resmaps")
