"""What the weight converters in scripts/ share (synthjax/models/torch_checkpoints.py)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from synthjax.models import torch_checkpoints

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """A converter script as a module (scripts/ is not a package; its scripts import their
    shared reader, scripts/torch_state_dict.py, as `python scripts/x.py` would)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["convert_fid_inception", "convert_densenet121"])
def test_a_converter_without_torch_says_where_to_run(name, monkeypatch, tmp_path):
    script = load_script(name)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(SystemExit) as info:
        script.main([str(tmp_path / "in.pth"), str(tmp_path / "out.npz")])
    assert "run this once on any machine with PyTorch" in str(info.value)


def test_layout_differences_name_missing_extra_and_misshapen_arrays():
    expected = {"a": (2, 3), "b": (4,), "c": (1,)}
    arrays = {"a": np.zeros((3, 2)), "b": np.zeros(4), "d": np.zeros(1)}
    missing, extra, wrong = torch_checkpoints.layout_differences(expected, arrays)
    assert (missing, extra, wrong) == (["c"], ["d"], ["a (3, 2) (expected (2, 3))"])


def test_save_npz_adds_the_suffix_and_keeps_every_array(tmp_path, capsys):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    path = torch_checkpoints.save_npz(str(tmp_path / "weights"), arrays)
    assert path.endswith("weights.npz") and "2 arrays (8 values)" in capsys.readouterr().out
    with np.load(path) as npz:
        assert {k: npz[k].tolist() for k in npz.files} == {k: v.tolist() for k, v in arrays.items()}
