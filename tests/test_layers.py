"""The package's folders are its pipeline stages, and imports flow one way between them.

docs/design.md states the rule; this test holds the code to it, so it cannot rot. A module may
import from its own folder and from folders of a lower layer, never from a higher one nor from a
sibling of its own layer; and no two modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "inferwatch"
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"

# Lowest first. A top-level module is its own unit (`cli`, `sidecar`, ...).
LAYERS: list[set[str]] = [
    {"stats"},                       # pure numpy/scipy
    {"client", "job"},               # libraries for user code: nothing of the sidecar
    {"config"},                      # typed configuration, parsed once
    {"support"},                     # small shared services: auth, rotating files
    {"exposition"},                  # the metric contract and the collector wrapper
    {"ingest"},                      # bytes -> events: codecs, push bodies, value normalisation
    {"reference"},                   # the reference profile: format, builder, readers, store
    {"pipeline"},                    # queue, worker, window, segments, prediction log
    {"monitors"},                    # outputs, drift, guard, performance, resources
    {"report"},                      # the drift report page: reads the monitors' results
    {"serving", "alerting"},         # the HTTP edges; the rules and actions
    {"sidecar"},                     # wires the stages into one process
    {"batch"},                       # `inferwatch batch`: a table through the sidecar's pipeline
    {"batch_dask"},                  # `inferwatch batch --engine dask`: its partitions on a Dask cluster
    {"demo"},                        # `make demo`: a model server, traffic and the stack
    {"cli"},                         # the `inferwatch` command
    {"__main__"},
]
LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """`inferwatch.monitors.drift.engine` -> `monitors`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_nodes(tree: ast.AST) -> set[ast.AST]:
    """Imports under `if TYPE_CHECKING:` (for annotations only: never run)."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                found.update(ast.walk(child))
    return found


def imports_of(path: Path, runtime_only: bool = False) -> set[str]:
    """Every inferwatch module `path` imports, resolved to absolute names (lazy imports too)."""
    tree = ast.parse(path.read_text())
    skipped = type_checking_nodes(tree) if runtime_only else set()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "inferwatch")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "inferwatch":
                target = node.module
            else:
                continue
            found.add(target)
            # `from inferwatch.x import y` may import the module x.y
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() or \
                        (PACKAGE.parent / candidate.replace(".", "/")).is_dir():
                    found.add(candidate)
    return found


def graph(runtime_only: bool = False) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, runtime_only) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_folder_and_top_level_module_has_a_layer():
    units = {unit_of(m) for m in graph()} - {""}
    assert units <= set(LAYER_OF), f"give these a layer in tests/test_layers.py and docs/design.md: {units - set(LAYER_OF)}"


def test_imports_flow_from_higher_layers_to_lower_ones_only():
    wrong = []
    for module, targets in graph().items():
        unit = unit_of(module)
        if not unit:
            continue
        for target in targets:
            other = unit_of(target)
            if not other or other == unit:
                continue  # the package's version, or its own folder
            if LAYER_OF[other] > LAYER_OF[unit] or (LAYER_OF[other] == LAYER_OF[unit]):
                wrong.append(f"{module} imports {target} ({unit} may not import {other})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    """Annotations may name a type of a module that imports this one (under TYPE_CHECKING); code may not."""
    edges = graph(runtime_only=True)
    # Tarjan's strongly connected components; any component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in edges:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_design_md_lists_the_same_layers():
    """The table in docs/design.md is the rule a reader sees: it names every folder this test knows."""
    text = DESIGN.read_text()
    table = text[text.index("## The house"):]
    named = set(re.findall(r"^  ([a-z_]+)(?:/|\.py)\s", table.split("\n## ", 1)[0], re.M))
    missing = {u for u in LAYER_OF if u != "__main__"} - named
    assert not missing, f"docs/design.md does not name: {sorted(missing)}"
