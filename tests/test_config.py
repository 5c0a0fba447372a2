from pathlib import Path

import pytest

from spikeguard.config import TrainConfig, config_from_dict, load_config_file, validated_lamb
from spikeguard.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_paper_configs_cover_every_setting():
    names = {p.stem for p in CONFIGS}
    for dataset in ("cifar10", "cifar100"):
        for model in ("vgg11", "wrn16_4"):
            for defense in ("vanilla", "at", "rat", "gr", "sr", "sr_star"):
                assert f"{dataset}_{model}_{defense}" in names
    for defense in ("vanilla", "at", "sr", "sr_star"):  # issue 7: the event-data set, VGG-11 only
        assert f"cifar10dvs_vgg11_{defense}" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_validates(path):
    cfg = config_from_dict(load_config_file(path)).resolved()
    dataset, _, rest = path.stem.partition("_")
    assert cfg.dataset == dataset and path.stem.endswith(cfg.defense) and cfg.model in path.stem
    assert cfg.time_steps == (10 if dataset == "cifar10dvs" else 8) and cfg.epochs == 200 and cfg.lr == 0.1
    if cfg.defense in ("at", "sr_star"):
        assert cfg.eps == pytest.approx(8 / 255) and cfg.alpha == pytest.approx(2.55 / 255) and cfg.steps == 7


def test_defaults_follow_the_dataset():
    cfg = TrainConfig(dataset="cifar10").resolved()
    assert cfg.model == "vgg11" and cfg.eps == pytest.approx(8 / 255)
    assert TrainConfig(dataset="digits").resolved().model == "digits_cnn"


def test_the_validated_lamb_is_the_configs_default_wherever_it_is_built():
    # one place: the CLI, study plans and training.train all resolve a TrainConfig
    assert TrainConfig(dataset="digits", defense="sr").resolved().lamb == validated_lamb("digits", "sr") > 0
    assert TrainConfig(dataset="digits", defense="gr").resolved().lamb == validated_lamb("digits", "gr") > 0
    assert TrainConfig(dataset="digits", defense="sr", lamb=0.5).resolved().lamb == 0.5
    assert TrainConfig(dataset="digits").resolved().lamb == 0.0
    with pytest.raises(UserError, match="none has been validated for cifar10"):
        TrainConfig(dataset="cifar10", defense="sr").resolved()


@pytest.mark.parametrize("device", ["mps", "cuda:x", "gpu", "", "cuda:1234"])
def test_one_device_check_for_training_evaluation_and_the_runtime(device):
    from spikeguard.evaluation.config import EvalConfig
    from spikeguard.runtime import pick_device

    messages = set()
    for build in (lambda: TrainConfig(device=device).resolved(), lambda: EvalConfig(device=device).validated(),
                  lambda: pick_device(device)):
        with pytest.raises(UserError) as err:
            build()
        messages.add(str(err.value))
    assert messages == {f"device must be auto, cpu, cuda or cuda:N, got {device!r}"}
    assert EvalConfig(device="cuda:1").validated().device == TrainConfig(device="cuda:1").resolved().device


@pytest.mark.parametrize("values", [{"unknown_key": 1}, {"epochs": 1.5}, {"epochs": True}, {"lr": "fast"},
                                    {"augment": "yes"}, {"dataset": None}, {"tau": 2.0}, {"lr": -0.1},
                                    {"val_fraction": 1.0}, {"batch_size": 0}])
def test_bad_values_are_rejected(values):
    with pytest.raises(UserError):
        config_from_dict(values).resolved()


def test_digits_default_eps_is_the_demo_eps():
    from spikeguard.data.registry import DEFAULT_EPS
    from spikeguard.demo import demo_selection

    assert DEFAULT_EPS["digits"] == demo_selection()["chosen"]["eps"]


def test_mnist5k_defaults_are_its_validation_selection():
    """The package's copy of what experiments/select_mnist5k_settings.py chose is that record's choice."""
    import json

    from spikeguard.config import validated_choices
    from spikeguard.data.registry import DEFAULT_EPS
    from spikeguard.demo import demo_selection

    package = validated_choices("mnist5k")
    record = json.loads((Path(__file__).resolve().parents[1] / package["source"]).read_text())
    assert record["identity"]["split"] == "validation"
    chosen = record["chosen"]
    assert (package["epochs"], package["eps"], package["lamb_sr"], package["lamb_sr_ann"]) == (
        chosen["epochs"], chosen["eps"], chosen["lamb_snn"]["lamb"], chosen["lamb_ann"]["lamb"])
    assert DEFAULT_EPS["mnist5k"] == chosen["eps"]
    assert validated_lamb("mnist5k", "sr") == chosen["lamb_snn"]["lamb"]
    assert validated_lamb("mnist5k", "gr") is None and validated_lamb("cifar10", "sr") is None  # not validated
    assert config_from_dict({"dataset": "mnist5k", "defense": "sr"}).resolved().lamb == chosen["lamb_snn"]["lamb"]
    twin = config_from_dict({"dataset": "mnist5k", "defense": "sr", "network": "ann"}).resolved()
    assert twin.lamb == chosen["lamb_ann"]["lamb"] != chosen["lamb_snn"]["lamb"]  # the ANN twin's own choice
    digits = demo_selection()["chosen"]["lamb"]  # digits chose none for the twin: the spiking network's
    assert config_from_dict({"dataset": "digits", "defense": "sr", "network": "ann"}).resolved().lamb == digits


@pytest.mark.parametrize("field,value", [("encoder", "rate"), ("attack", "cw"), ("model", "resnet")])
def test_unknown_names_are_rejected_before_any_work(field, value):
    with pytest.raises(UserError, match=f"unknown {field}"):
        config_from_dict({field: value}).resolved()


def test_every_yaml_file_is_read_by_one_reader_that_refuses_a_binary_file_in_one_line(tmp_path):
    from spikeguard.evaluation.suites import load_suite
    from spikeguard.rundir import read_config
    from spikeguard.study.plan import load_plan

    run = tmp_path / "run"
    run.mkdir()
    for path in (tmp_path / "binary.yaml", run / "config.yaml"):
        path.write_bytes(b"\xff\xfe\x00\x9c binary")
    readers = {"config file": lambda: load_config_file(tmp_path / "binary.yaml"),
               "plan file": lambda: load_plan(tmp_path / "binary.yaml"),
               "suite file": lambda: load_suite(tmp_path / "binary.yaml"),
               "run config": lambda: read_config(run)}
    for what, read in readers.items():
        with pytest.raises(UserError, match=f"^{what} '.*' is not text$"):
            read()
    package = Path(__file__).resolve().parents[1] / "spikeguard"
    readers_of_yaml = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                             if "yaml.safe_load" in p.read_text() or "yaml.load(" in p.read_text())
    assert readers_of_yaml == ["config.py"]
