"""Config files are found by the path users type, from any working directory."""

import os

import pytest

from synthjax import main
from synthjax.core import config_files


def test_a_config_path_relative_to_the_checkout_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = config_files.find("configs/quickstart.py")
    assert os.path.isabs(found) and found.endswith(os.path.join("configs", "quickstart.py"))
    assert config_files.load("configs/quickstart.py:smoke").gan.arch == "dcgan"
    argv = main._find_config(["synthjax", "--config=configs/quickstart.py:smoke", "--workdir=w"])
    assert argv[1] == f"--config={found}:smoke" and argv[2] == "--workdir=w"
    argv = main._find_config(["synthjax", "--config", "configs/quickstart.py", "--workdir=w"])
    assert argv[2] == found


def test_a_local_file_of_the_same_name_wins_and_unknown_names_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.py").write_text("def get_config(arg=None): ...\n")
    assert config_files.find("configs/quickstart.py") == "configs/quickstart.py"
    assert config_files.find("configs/nope.py") == "configs/nope.py"


def test_parse_arg_reads_variants_the_big_vision_way():
    parse = config_files.parse_arg
    assert parse(None, smoke=False, res=32).to_dict() == {"smoke": False, "res": 32}
    assert parse("smoke,res=64", smoke=False, res=32).to_dict() == {"smoke": True, "res": 64}
    assert parse("smoke=false,lr=0.5,name=x", smoke=True, lr=1.0, name="").to_dict() == {
        "smoke": False,
        "lr": 0.5,
        "name": "x",
    }
    with pytest.raises(ValueError, match="unknown config variant 'tiny'; known: ct, smoke"):
        parse("ct,tiny", smoke=False, ct=False)
    with pytest.raises(ValueError, match="needs a value"):
        parse("res", res=32)
    with pytest.raises(ValueError, match="use true or false"):
        parse("smoke=maybe", smoke=False)
