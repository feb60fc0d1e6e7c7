"""Every third-party module the package imports is a declared runtime dependency.

A module that only the test extra happens to install (scipy arrived with scikit-learn) works
in CI and fails on a user's machine. This reads every import in `synthjax/` (inside
functions too) and checks its distribution against `[project] dependencies`.
"""

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Import name -> distribution name, where they differ.
DISTRIBUTION = {
    "PIL": "pillow",
    "absl": "absl-py",
    "array_record": "array-record",
    "etils": "etils",
    "ml_collections": "ml-collections",
    "orbax": "orbax-checkpoint",
    "tensorflow_datasets": "tensorflow-datasets",
}


def _imported_top_level_modules() -> dict[str, str]:
    found = {}
    for path in sorted((REPO / "synthjax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "synthjax":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\[<>=~! ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def test_every_imported_module_is_a_declared_dependency():
    declared = _declared()
    missing = {
        module: where
        for module, where in _imported_top_level_modules().items()
        if DISTRIBUTION.get(module, module).lower() not in declared
    }
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_the_package_needs_python_311():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # jax 0.10, numpy 2.4, pandas 3 need it
    assert project["scripts"]["synthjax"] == "synthjax.main:run"
