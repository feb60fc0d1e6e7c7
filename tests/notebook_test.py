"""notebooks/analysis.ipynb runs top to bottom on a fake finished sweep, in a real kernel.

nbclient, nbformat and ipykernel are in the `test` extra: a missing one fails here rather
than skipping, so a broken install cannot pass as green.
"""

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from sweep_fixtures import make_sweep

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


@pytest.fixture(autouse=True)
def _venv_kernelspecs_first(monkeypatch):
    # JUPYTER_PATH outranks the user's own kernelspec folders, so a python3 kernel someone
    # installed for another interpreter cannot stand in for this environment's.
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))


def test_python3_kernel_is_this_interpreter():
    # ipykernel's kernelspec says "python"; jupyter_client swaps in sys.executable, so the
    # notebook runs in the venv even when pytest was started as .venv/bin/python without
    # activating it. A user-level python3 kernelspec pointing elsewhere would break that.
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve(), command


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_notebook_runs_on_a_finished_sweep(tmp_path, monkeypatch):
    root = make_sweep(tmp_path / "sweep")
    monkeypatch.setenv("SYNTHJAX_RUNS", str(root))
    # The kernel inherits this process's environment: an MPLBACKEND=Agg set there would keep
    # the figures out of the notebook's outputs.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,  # per cell
        resources={"metadata": {"path": str(REPO)}},  # the kernel's cwd: synthjax importable
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # AUROC against the setting, the gap, per-label AUROC
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "9 runs under" in printed and "8 finished, 1 not yet" in printed
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("| 2 | 0.900 [0.880, 0.920] | 0.705 [0.624, 0.786] |" in t for t in markdown)
