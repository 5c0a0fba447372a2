"""What the tool tells its user (issue 15): progress lines in a log, --quiet, eps hints, help texts,
config.yaml holding only what applies, old run directories, and the checkpoint message."""

import contextlib
import io

import pytest
import yaml

from spikeguard.cli import main
from spikeguard.config import TrainConfig
from spikeguard.errors import UserError
from spikeguard.evaluation.config import EvalConfig
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.progress import Reporter

TINY_SUITE = {"name": "tiny", "checks": {"unbounded_n": 4, "unbounded_steps": 2},
              # the escalation (when a flag fires) at a test's size
              "escalation": {"decision_queries": 50, "substitute_epochs": 2, "substitute_queries": 200, "transfer_steps": 5,
                             "estimate_steps": 5, "estimate_directions": 8, "square_queries": 50, "square_restarts": 1},
              "attacks": [{"attack": "fgsm", "estimators": ["triangle:1", "atan:2"]},
                          {"attack": "random-sign", "draws": 1}]}
FAST_TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--time-steps", "2", "--batch-size", "256"]


def _stderr_of(argv):
    """(exit code, stderr) of the command with stderr a plain buffer, as in a log file."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        code = main(argv)
    return code, buffer.getvalue()


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ux")
    code, err = _stderr_of([*FAST_TRAIN, "--out", str(root / "run")])
    assert code == 0
    return root / "run", err


def test_training_prints_a_line_per_epoch_in_a_log(vanilla_run, tmp_path):
    _, err = vanilla_run
    lines = [line for line in err.splitlines() if line.startswith("vanilla epoch ")]
    assert len(lines) == 1 and "loss " in lines[0] and "validation accuracy " in lines[0], err
    assert "; elapsed 0:0" in lines[0] and lines[0].endswith(", remaining 0:00:00"), err  # the last epoch
    assert "\r" not in err  # no bar in a log
    code, err = _stderr_of([*FAST_TRAIN, "--defense", "sr", "--out", str(tmp_path / "q"), "--quiet"])
    assert code == 0 and err == ""  # --quiet: nothing; and sr took the digits lamb without --lamb
    assert yaml.safe_load((tmp_path / "q" / "config.yaml").read_text())["lamb"] == 0.03


def test_evaluation_prints_a_line_per_attack_and_batch_in_a_log(vanilla_run, tmp_path):
    run, _ = vanilla_run
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    argv = ["evaluate", str(run), "--suite", str(suite), "--n", "8", "--batch-size", "4"]
    code, err = _stderr_of([*argv, "--out", str(tmp_path / "r.json")])
    assert code == 0
    assert "6 units (attack x estimator x batch)" in err, err
    for batch in (1, 2):
        for attack in ("fgsm", "random-sign"):
            assert f"batch {batch} of 2: {attack} done" in err
    assert "2/6 units, elapsed 0:00:" in err and "6/6 units, elapsed 0:00:" in err and ", remaining 0:00:00" in err
    assert "unbounded check" in err
    code, err = _stderr_of([*argv, "--out", str(tmp_path / "q.json"), "--quiet"])
    assert code == 0 and err == ""


def test_the_live_bar_names_the_unit(tiny_model, digits):
    from evaluation_calls import run_suite

    stream = io.StringIO()
    reporter = Reporter(stream=stream, live=True)
    seen = []
    unit = reporter.unit
    reporter.unit = lambda name: (seen.append(name), unit(name))
    run_suite(tiny_model, digits.test, suite_from_dict(TINY_SUITE), 0.1, num_classes=10, n=4, progress=reporter)
    assert seen == ["fgsm / triangle:1 / batch 1 of 1", "fgsm / atan:2 / batch 1 of 1",
                    "random-sign / random draws / batch 1 of 1"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_live_bar_with_labelled_times_and_a_log_or_quiet_gets_none():
    from pathlib import Path

    terminal = _Terminal()
    with Reporter(stream=terminal).counting("steps of vanilla epoch 1/2", 4, done=1) as step:
        for _ in range(3):
            step()
    shown = terminal.getvalue()
    assert "steps of vanilla epoch 1/2" in shown and "4/4" in shown and "elapsed 0:00:00, remaining " in shown
    for quiet in (Reporter(stream=io.StringIO()), Reporter(stream=_Terminal(), enabled=False)):
        with quiet.counting("steps", 2) as step:
            step()
        assert quiet.stream.getvalue() == ""
    # progress.py draws every bar, with one library
    package = Path(__file__).resolve().parents[1] / "spikeguard"
    drawing = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if "rich.progress" in p.read_text() or "tqdm" in p.read_text())
    assert drawing == ["progress.py"]


# ---- config.yaml: only what applies; old full files still work --------------------------------------------

def test_time_remaining_weighs_each_unit_by_its_attacks_work(monkeypatch):
    """A strong suite's 25 FGSM units took 8 s in all and its 4 APGD-T units 8 min: counting units alike
    said "remaining 0:05:11" with 33 minutes to go. The estimate weighs units by their attack's work."""
    from spikeguard import progress
    from spikeguard.attacks.registry import ATTACKS, TRANSFER, attack_kind, unit_work
    from spikeguard.evaluation.suites import load_suite

    strong = {spec.attack: unit_work(spec.attack, spec.params) for spec in load_suite("strong").attacks}
    assert strong["fgsm"] == 1 and strong["pgd"] == 100 and strong["apgd-t"] == 900 and strong["rays"] == 2500
    assert unit_work("apgd-t", {"steps": 100, "restarts": 1}, num_classes=5) == 400  # 4 target classes
    for name in ATTACKS.names():  # every work parameter is a parameter of its kind (transfer's: the suite's)
        known = set(attack_kind(name).params) | ({"steps"} if name == TRANSFER else set())
        assert set(attack_kind(name).passes) <= known, name

    clock = iter([0.0, 60.0, 120.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    reporter = Reporter(stream=stream, live=False)
    reporter.begin("suite strong", 3, work=1 + 1 + 98)
    reporter.advance(work=1)
    reporter.advance(work=1)
    reporter.step_done("fgsm", 60.0)  # 2 of 100 work in 60 s: 98 more take 49 min, not 30 s
    assert "2/3 units, elapsed 0:01:00, remaining 0:49:00" in stream.getvalue()
    reporter.advance(work=98)
    reporter.step_done("apgd-t", 60.0)
    assert "3/3 units, elapsed 0:02:00, remaining 0:00:00" in stream.getvalue()
    # a terminal's live bar says the same: its task carries the weighted work beside the unit count
    from types import SimpleNamespace

    live = SimpleNamespace(fields={"work": (2.0, 100.0)}, elapsed=60.0, completed=2, total=3)
    assert str(progress._TimesColumn().render(live)) == "elapsed 0:01:00, remaining 0:49:00"


def test_config_yaml_records_only_what_applies(vanilla_run):
    run, _ = vanilla_run
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    for absent in ("lamb", "h", "alpha", "steps", "attack", "beta", "val_fraction", "augment", "download",
                   "data_dir", "dvs"):
        assert absent not in recorded
    assert recorded["eps"] == 0.15 and recorded["defense"] == "vanilla"
    sr = TrainConfig(dataset="cifar10", defense="sr_star", lamb=0.01).resolved().to_record()
    assert {"lamb", "h", "alpha", "steps", "attack", "val_fraction", "augment"} <= set(sr) and "beta" not in sr


def test_a_run_with_an_old_full_config_yaml_resumes_and_evaluates(vanilla_run, tmp_path):
    import shutil

    run, _ = vanilla_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    full = TrainConfig(dataset="digits", epochs=1, time_steps=2, batch_size=256).resolved().to_dict()
    (old / "config.yaml").write_text(yaml.safe_dump(full, sort_keys=False))  # as written before issue 15
    assert main(["train", "--resume", str(old), "--epochs", "2", "--quiet"]) == 0
    assert len((old / "metrics.jsonl").read_text().splitlines()) == 2
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    assert main(["evaluate", str(old), "--suite", str(suite), "--n", "4", "--out", str(tmp_path / "r.json"),
                 "--quiet"]) == 0


# ---- eps sanity ----------------------------------------------------------------------------------------

def test_an_linf_eps_above_one_is_refused_with_a_hint(capsys, tmp_path):
    with pytest.raises(UserError, match=r"did you mean 8/255"):
        EvalConfig(eps=8).validated()
    with pytest.raises(UserError, match=r"did you mean 8/255"):
        EvalConfig(eps="8", threat_model="frames-linf").validated()
    assert EvalConfig(eps="8/255").validated().eps == pytest.approx(8 / 255)
    with pytest.raises(UserError, match=r"eps 8 is above 1.*did you mean 8/255"):
        TrainConfig(eps=8.0).resolved()
    for argv in (["analyze", "run", "--eps", "0.1,4", "--out", str(tmp_path / "a")],
                 ["evaluate", "run", "--suite", "quick", "--eps", "8", "--out", str(tmp_path / "r.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "/255" in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match=r"suite 'x': fgsm eps 4 is above 1"):
        suite_from_dict({"name": "x", "attacks": [{"attack": "fgsm", "eps": 4}]}, source="x")
    l2 = suite_from_dict({"name": "x", "attacks": [{"attack": "apgd-ce", "norm": "l2", "eps": 4}]}, source="x")
    assert l2.attacks[0].eps == 4.0  # l2 radii are not in pixel scale


# ---- help, messages ---------------------------------------------------------------------------------------

def test_help_shows_defaults_and_what_lamb_needs(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("(default: 200)", "(default: 0.1)", "(default: 64)", "digits 0.15",
                     "required for gr, sr, sr_star, sr_rat, sr_gr and sr_distill", "sr 0.03", "gr 1",
                     "mnist5k: sr 0.01 (ANN twin 0.003)", "none was, so give it"):
        assert fragment in text, fragment
    assert main(["analyze", "--help"]) == 0
    assert "[default: auto]" in " ".join(capsys.readouterr().out.split())
    assert main(["evaluate", "--help"]) == 0
    assert "[default: 256]" in " ".join(capsys.readouterr().out.split())


def test_a_file_that_is_not_a_checkpoint_is_not_called_dangerous(vanilla_run, tmp_path, capsys):
    run, _ = vanilla_run
    assert main(["evaluate", str(run / "metrics.jsonl"), "--suite", "quick", "--out", str(tmp_path / "r.json"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint" in err and "could run code" not in err and err.count("\n") == 1


def test_the_printed_table_says_which_columns_are_cumulative(capsys):
    from spikeguard.commands.evaluate import print_evaluation

    record = {"model": "m", "dataset": "digits", "n": 4, "eps": 0.1, "suite": "quick", "clean_accuracy": 1.0,
              "ensemble_accuracy": 0.25, "flags": [], "notes": [],
              "attacks": [{"name": "apgd-ce", "accuracy": 0.5, "params": {}},
                          {"name": "square", "accuracy": 0.25, "params": {"survivors_only": True}}]}
    print_evaluation(record)
    out = capsys.readouterr().out
    assert "apgd-ce (alone)" in out and "square (cumulative)" in out and "headline" not in out


def test_bad_flags_are_refused_before_pytorch_is_imported(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom spikeguard.cli import main\n"
            f"for argv in (['train', '--out', {str(tmp_path / 'a')!r}, '--eps', '8'],\n"
            f"             ['train', '--out', {str(tmp_path / 'b')!r}, '--dataset', 'cifar10', '--defense', 'sr'],\n"
            f"             ['evaluate', 'run', '--suite', 'quick', '--eps', '8', '--out', {str(tmp_path / 'r.json')!r}]):\n"
            "    assert main(argv) == 2\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    assert "did you mean 8/255" in done.stderr and "none has been validated for cifar10, so give --lamb" in done.stderr
