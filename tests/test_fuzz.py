"""Fuzzing what users type: YAML configs and `spikeguard train` flags. Every input ends in a valid run or in one
line and exit code 2, never in a traceback."""

import shutil
import string
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeguard.data.cifar as cifar_module
import spikeguard.training as train_module
from spikeguard.cli import main
from spikeguard.config import TrainConfig, config_from_dict, load_config_file
from spikeguard.errors import UserError

FIELDS = [f.name for f in fields(TrainConfig)]
JUNK_KEYS = ["learning_rate", "epoch", "", "lamb ", "LR", "__class__", "a\nb", 0, 1.5, None, True]
NAMES = ["digits", "cifar10", "cifar100", "mnist", "digits_cnn", "vgg11", "wrn16_4", "vanilla", "at", "rat", "gr",
         "sr", "sr_star", "pgd", "fgsm", "direct", "poisson", "abort", "skip", "rollback", "auto", "cpu", "cuda",
         "cuda:0", "cuda:x", "8/255", "1/0", "1e400", "nan", "-inf", "0", "-1", ""]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(NAMES),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Valid-looking values for each field, so that fuzzing also reaches the range and cross-field checks
NEAR_VALID = {"epochs": st.integers(-2, 3), "lamb": st.floats(-1, 200), "h": st.sampled_from([1e-12, 1e-4, 1e-3, 0.5, 2]),
              "tau": st.floats(-1, 2), "val_fraction": st.floats(-0.5, 1.5), "seed": st.integers(-5, 2**33)}
PROFILE = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


def _config_values():
    keys = st.sampled_from(FIELDS + JUNK_KEYS)
    random = st.dictionaries(keys, VALUES, max_size=8)
    near = st.fixed_dictionaries({}, optional=NEAR_VALID)
    return st.one_of(random, near, st.builds(lambda a, b: {**a, **b}, random, near))


def _validated_or_one_line(values) -> TrainConfig | None:
    try:
        cfg = config_from_dict(values).resolved()
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return None
    assert isinstance(cfg, TrainConfig)
    assert config_from_dict(cfg.to_dict()).resolved() == cfg  # what a run writes to config.yaml reads back
    return cfg


@PROFILE
@given(_config_values())
def test_random_config_dicts_validate_or_fail_with_one_line(values):
    _validated_or_one_line(values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=string.printable, max_size=60) | st.builds(
    lambda k, v: f"{k}: {v}\n", st.sampled_from(FIELDS), st.sampled_from(NAMES + ["[1, 2]", "{a: 1}", "!!python/object:os.system {}",
                                                                                "2001-12-14", "0x1F", "1_000", "~", "*a"])))
def test_random_yaml_files_validate_or_fail_with_one_line(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        values = load_config_file(path)
    except UserError as e:
        assert "\n" not in str(e)
        return
    _validated_or_one_line(values)


FLAGS = ["--dataset", "--model", "--defense", "--lamb", "--h", "--eps", "--alpha", "--steps", "--attack", "--epochs",
         "--batch-size", "--lr", "--time-steps", "--tau", "--encoder", "--seed", "--data-dir", "--device",
         "--checkpoint-every", "--keep-checkpoints", "--nan-policy", "--config", "--resume", "--download",
         "--no-download", "--no-progress", "--out", "--bogus", "-x", "--help"]
VALUE_TOKENS = st.one_of(st.sampled_from(NAMES + ["run", "run2", "c.yaml", ".", "/", "0.5", "1e-12", "2", "1",
                                                  "99999999999999999999", "a\nb"]),
                         st.text(alphabet=string.printable, max_size=10))
TOKENS = st.one_of(st.sampled_from(FLAGS), VALUE_TOKENS)
# Flag-value pairs get past the parser to the checks behind it; loose tokens test the parser itself.
ARGV = st.one_of(st.lists(TOKENS, max_size=8),
                 st.lists(st.tuples(st.sampled_from(FLAGS[:23]), VALUE_TOKENS), max_size=5).map(
                     lambda pairs: [token for pair in pairs for token in pair]))


@pytest.fixture
def no_training(monkeypatch, tmp_path, digits):
    """Everything before the first training step runs for real; fit() itself is replaced, the embedded
    data set is loaded once, and nothing is downloaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("dataset: digits\nepochs: 1\n")

    def fit(state, progress):
        return train_module.TrainResult(state.run_dir, state.model, 0.5, 1, 0.0)

    def load(name, *args, **kwargs):
        return digits if name == "digits" else real_load(name, *args, **kwargs)

    def download(*args):
        raise UserError("downloads are off in the tests")

    real_load = train_module.load_dataset
    monkeypatch.setattr(train_module, "fit", fit)
    monkeypatch.setattr(train_module, "load_dataset", load)
    monkeypatch.setattr(cifar_module, "_download", download)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ARGV, st.booleans())
def test_random_train_command_lines_exit_0_or_2_with_one_line(no_training, capsys, argv, with_out):
    code = main(["train", *argv, *(["--out", "fresh"] if with_out else [])])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code in (0, 2), captured.err
    if code == 2:
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    shutil.rmtree("fresh", ignore_errors=True)  # a started run leaves files; the next example starts afresh


def test_the_fuzzed_cli_really_reaches_training(no_training, capsys):
    """Guards the fuzz test against passing vacuously: a valid command line gets to fit()."""
    assert main(["train", "--epochs", "1", "--out", "fresh"]) == 0
    assert "best validation accuracy 0.5000" in capsys.readouterr().out
    assert yaml.safe_load(Path("fresh/config.yaml").read_text())["epochs"] == 1
