"""A study cell can name a model function (issue 23): a user's snnTorch network is trained, evaluated and
aggregated like a registry model, and its record says which function built it."""

import json

import yaml
from test_study import TINY_SUITE, run_cli, write_plan


def test_a_study_cell_trains_and_evaluates_a_model_function(tmp_path, one_thread):
    plan = {"name": "model-fn", "grid": {"defense": ["vanilla"], "seed": [0]},
            "train": {"dataset": "digits", "model_fn": "ecosystem_models:TorchCSNN", "epochs": 1, "batch_size": 256},
            "evaluate": [{"suite": "tiny.yaml", "n": 16, "batch_size": 16}]}
    path = write_plan(tmp_path, plan)
    assert TINY_SUITE["attacks"]  # the same tiny suite as the 2x2 study
    code, _, err = run_cli(["study", path, "--out", tmp_path / "study", "--quiet"])
    assert code == 0, err
    data = json.loads((tmp_path / "study" / "study.json").read_text())
    (cell,) = data["cells"]
    assert cell["status"] == "done"
    numbers = cell["numbers"]
    assert 0 <= numbers["worst_case"] <= numbers["clean"] <= 1
    config = yaml.safe_load((tmp_path / "study" / cell["dir"] / "config.yaml").read_text())
    assert config["model_fn"] == "ecosystem_models:TorchCSNN"
    assert "time_steps" not in config  # a setting of spikeguard's own models does not apply to it


def test_a_plan_naming_both_a_model_and_a_model_function_is_refused(tmp_path):
    plan = {"name": "both", "grid": {"seed": [0]},
            "train": {"model": "digits_cnn", "model_fn": "ecosystem_models:TorchCSNN", "epochs": 1},
            "evaluate": [{"suite": "tiny.yaml", "n": 16}]}
    code, _, err = run_cli(["study", write_plan(tmp_path, plan), "--out", tmp_path / "study", "--quiet"])
    assert code == 2 and "not both" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()
