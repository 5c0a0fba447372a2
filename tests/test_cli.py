"""The command line end to end on digits, and every bad input ending in one line and exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spikeguard.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--dataset", "digits", "--defense", "sr", "--lamb", "0.01", "--epochs", "1",
                 "--time-steps", "4", "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_writes_a_complete_run(run_dir):
    assert {p.name for p in run_dir.iterdir()} == {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"}
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["defense"] == "sr" and cfg["lamb"] == 0.01 and cfg["model"] == "digits_cnn"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert len(lines) == 1
    for key in ("loss", "ce", "penalty", "val_accuracy", "grad_l1", "grad_zero_fraction"):
        assert key in record
    assert record["penalty"] > 0 and 0 <= record["grad_zero_fraction"] <= 1 and record["val_accuracy"] > 0.5
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run_dir / name, weights_only=True)
        assert ckpt["arch"]["name"] == "digits_cnn" and "conv" not in ckpt["model"]
        assert any(k.endswith("weight") for k in ckpt["model"])


def test_evaluate_prints_and_writes_results(run_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["evaluate", str(run_dir), "--suite", "paper", "--n", "24", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 24 and result["suite"] == "paper" and result["model"] == "digits_cnn"
    assert [a["name"] for a in result["attacks"]] == ["fgsm", "pgd-10", "pgd-30", "pgd-50"]
    assert result["attacks"][0]["estimators"] == ["triangle:1", "sigmoid:4", "atan:2", "bptr"]
    assert 0 <= result["ensemble_accuracy"] <= min(a["accuracy"] for a in result["attacks"]) <= result["clean_accuracy"]
    assert len(result["checkpoint_sha256"]) == 64 and "torch" in result["libraries"]
    assert (tmp_path / result["per_sample"]).is_file()
    assert "pgd-10" in capsys.readouterr().out


def test_a_distilled_sr_student_trains_from_a_teacher_run_and_refuses_a_changed_teacher(run_dir, tmp_path, capsys):
    """sr_distill end to end: the student logs its distillation term, records its teacher's path and sha256, and
    a resume against a teacher whose file changed is one line, exit 2, with the student's files untouched."""
    import shutil

    from spikeguard.checkpoint import read_checkpoint, save_checkpoint
    from spikeguard.provenance import file_sha256

    teacher = tmp_path / "teacher"
    shutil.copytree(run_dir, teacher)
    student = tmp_path / "student"
    assert main(["train", "--defense", "sr_distill", "--teacher", str(teacher), "--kd-temperature", "3",
                 "--epochs", "1", "--time-steps", "2", "--batch-size", "256", "--out", str(student),
                 "--no-progress", "--quiet"]) == 0
    cfg = yaml.safe_load((student / "config.yaml").read_text())
    assert cfg["teacher"] == [str(teacher)] and cfg["kd_temperature"] == 3.0 and cfg["kd_alpha"] == 0.9
    epoch = json.loads((student / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch["kd"] > 0 and epoch["penalty"] > 0
    best = read_checkpoint(student / "best.pt")
    assert best["teachers"] == [{"path": str(teacher / "best.pt"), "sha256": file_sha256(teacher / "best.pt")}]
    assert "kd_alpha" not in yaml.safe_load((run_dir / "config.yaml").read_text())  # recorded for sr_distill only

    payload = read_checkpoint(teacher / "best.pt")
    payload["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in payload["model"].items()}
    save_checkpoint(teacher / "best.pt", {k: v for k, v in payload.items() if k not in ("format", "version", "sha256")})
    before = {p.name: p.stat().st_mtime_ns for p in student.iterdir()}
    assert "teacher" in one_line_error(capsys, ["train", "--resume", str(student), "--epochs", "2", "--no-progress"])
    assert {p.name: p.stat().st_mtime_ns for p in student.iterdir()} == before


def test_train_from_config_file_with_flag_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: digits\ndefense: vanilla\nepochs: 3\ntime_steps: 2\neps: 8/255\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["epochs"] == 1 and cfg["time_steps"] == 2 and cfg["eps"] == pytest.approx(8 / 255)


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--model", "resnet999"], "unknown model"),
    (["train", "--defense", "magic"], "unknown defense"),
    (["train", "--dataset", "mnist"], "unknown dataset"),
    (["train", "--eps", "-0.1"], "eps"),
    (["train", "--defense", "sr", "--lamb", "0.1", "--h", "0"], "h must be a positive"),
    (["train", "--defense", "sr", "--lamb", "0.1", "--h", "-1"], "h must be a positive"),
    (["train", "--dataset", "cifar10", "--defense", "sr"], "needs a positive lamb"),  # digits has a default
    (["train", "--epochs", "zero"], "epochs"),
    (["train", "--tau", "1.5"], "tau"),
    (["train", "--encoder", "rate"], "unknown encoder"),
    (["train", "--no-such-flag"], "no-such-flag"),
    (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "not found"),
    (["train", "--defense", "sr_distill"], "needs --teacher"),
    (["train", "--defense", "sr", "--teacher", "/nonexistent/run"], "--teacher is for defense sr_distill"),
    (["train", "--defense", "sr_distill", "--teacher", "/nonexistent/run"], "neither a checkpoint nor a run"),
    (["train", "--defense", "sr_distill", "--teacher", "x", "--kd-alpha", "2"], "kd_alpha"),
])
def test_bad_train_input_is_one_line_exit_2(capsys, tmp_path, argv, fragment):
    out = tmp_path / "run"
    err = one_line_error(capsys, argv + ["--out", str(out)])
    assert fragment in err
    assert not out.exists()  # nothing was written


def test_bad_config_file_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: digits\nlearning_rate: 0.1\n")
    assert "learning_rate" in one_line_error(capsys, ["train", "--config", str(bad), "--out", str(tmp_path / "r")])
    bad.write_text("epochs: [1, 2]\n")
    assert "epochs" in one_line_error(capsys, ["train", "--config", str(bad), "--out", str(tmp_path / "r")])
    bad.write_text("eps: 8/0\n")
    assert "eps" in one_line_error(capsys, ["train", "--config", str(bad), "--out", str(tmp_path / "r")])


def test_existing_run_is_never_overwritten(capsys, run_dir):
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert "already exists" in one_line_error(capsys, ["train", "--epochs", "1", "--out", str(run_dir)])
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def one_line_error_eval(capsys, argv):
    return one_line_error(capsys, argv + ["--suite", "quick", "--out", "never-written.json"])


def test_bad_checkpoints_are_refused(capsys, run_dir, tmp_path):
    assert "does not exist" in one_line_error_eval(capsys, ["evaluate", str(tmp_path / "missing.pt")])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    assert "is not a checkpoint" in one_line_error_eval(capsys, ["evaluate", str(junk)])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run_dir / "best.pt").read_bytes()[:2000])
    assert "not a loadable" in one_line_error_eval(capsys, ["evaluate", str(truncated)])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert "not a spikeguard checkpoint" in one_line_error_eval(capsys, ["evaluate", str(foreign)])
    assert "not 'vgg11'" in one_line_error_eval(capsys, ["evaluate", str(run_dir), "--model", "vgg11"])
    assert "not 'cifar10'" in one_line_error_eval(capsys, ["evaluate", str(run_dir), "--dataset", "cifar10"])
    assert "eps" in one_line_error_eval(capsys, ["evaluate", str(run_dir), "--eps", "-1"])


def test_checkpoint_whose_weights_do_not_fit_its_architecture(capsys, run_dir, tmp_path):
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    ckpt["arch"]["name"] = "wrn16_4"  # claims another architecture than its weights
    lying = tmp_path / "lying.pt"
    torch.save(ckpt, lying)
    assert "do not fit" in one_line_error_eval(capsys, ["evaluate", str(lying)])


def test_evaluate_refuses_to_overwrite_results(capsys, run_dir, tmp_path):
    out = tmp_path / "results.json"
    out.write_text("{}")
    assert "already exists" in one_line_error(capsys, ["evaluate", str(run_dir), "--suite", "quick", "--out", str(out)])
    assert out.read_text() == "{}"


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spikeguard", "train", "--defense", "nope", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown defense 'nope'; choose from vanilla, at, rat, gr, sr, sr_star, sr_rat, sr_gr, sr_distill"
