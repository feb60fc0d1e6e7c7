"""The package's layers, read from its imports (every import, inside functions too):

    core     synthjax.core: errors, workdir, checkpoint, compiler, distributed, parallel,
             metrics, progress, lock, config_files: infrastructure, no science
    library  data, models, train, eval, synthesize, report: the science
    stages   synthjax.stages: one thin module per pipeline stage
    tools    experiment, schema, main, analysis, export, reader_study: what people run

A module imports from its own layer or lower ones, never upward, and no two modules (nor
two library packages) import each other. What still breaks a rule is listed below, to be
removed as it is fixed: a new break fails, and so does a fixed one still listed.
"""

import ast
import collections
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"experiment", "schema", "main", "analysis", "export", "reader_study"}
LAYERS = ("core", "library", "stages", "tools")

# Known breaks (issue 22 removes them): none upward.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_MUTUAL_PACKAGES: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (REPO / "synthjax").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _layer(module: str) -> str:
    top = module.split(".")[1] if "." in module else ""
    if top == "core" or module == "synthjax":  # the package's own __init__ holds nothing
        return "core"
    if top == "stages":
        return "stages"
    if top in TOOLS:
        return "tools"
    return "library"


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_upward():
    upward = {
        (a, b)
        for a, targets in _graph().items()
        for b in targets
        if LAYERS.index(_layer(b)) > LAYERS.index(_layer(a))
    }
    assert upward == KNOWN_UPWARD, (
        f"new upward imports: {sorted(upward - KNOWN_UPWARD)}; "
        f"fixed, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - upward)}"
    )


def test_no_import_cycles_between_modules():
    graph, seen, cycles = _graph(), set(), []

    def visit(module: str, path: list[str]) -> None:
        seen.add(module)
        for target in sorted(graph[module]):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not cycles, cycles


def test_library_packages_do_not_import_each_other():
    graph = _graph()
    edges = {
        (_package(a), _package(b))
        for a, targets in graph.items()
        for b in targets
        if _package(a) != _package(b) and _layer(a) == _layer(b) == "library"
    }
    mutual = {tuple(sorted(pair)) for pair in edges if pair[::-1] in edges}
    assert mutual == KNOWN_MUTUAL_PACKAGES, (
        f"new: {sorted(mutual - KNOWN_MUTUAL_PACKAGES)}; "
        f"fixed, remove from the list: {sorted(KNOWN_MUTUAL_PACKAGES - mutual)}"
    )


def test_configs_and_the_stage_list_load_without_jax():
    """`configs/default.py` needs the stage order and dataset names, not the library."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, '.'); import configs.default; "
        "assert 'jax' not in sys.modules and 'tensorflow_datasets' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
