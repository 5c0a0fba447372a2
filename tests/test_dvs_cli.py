"""CIFAR10-DVS end to end through the command line, on synthetic recordings in both real file formats: one
training epoch, then an evaluation under each event threat model; and the bad data directories."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from dvs_files import make_synthetic_cifar10dvs

from spikeguard.cli import main

TIME_STEPS = 4
SMALL = {"size": 16, "roll": 2}  # tiny frames keep the test fast; split by event count as in the release


def config_file(tmp_path, **extra):
    path = tmp_path / "dvs.yaml"
    path.write_text(yaml.safe_dump({"dataset": "cifar10dvs", "model": "dvs_cnn", "time_steps": TIME_STEPS,
                                    "dvs": SMALL, "epochs": 1, "batch_size": 16, **extra}))
    return str(path)


@pytest.fixture(scope="module", params=["aedat2", "aedat4"])
def trained(request, tmp_path_factory):
    """A run trained one epoch on a synthetic set in one of the two formats."""
    root = tmp_path_factory.mktemp(f"dvs-{request.param}")
    data = make_synthetic_cifar10dvs(root / "data", per_class=10, fmt=request.param, seed=0)
    run = root / "run"
    code = main(["train", "--config", config_file(root), "--data-dir", str(data), "--defense", "sr_star",
                 "--lamb", "0.01", "--steps", "2", "--device", "cpu", "--out", str(run), "--no-progress"])
    assert code == 0
    return data, run


def test_one_epoch_writes_a_run_of_the_frames_model(trained):
    _, run = trained
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["encoder"] == "frames" and cfg["dataset"] == "cifar10dvs" and cfg["dvs"]["size"] == 16
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["penalty"] > 0 and 0 <= record["val_accuracy"] <= 1
    assert (run / "best.pt").is_file()


def test_frames_linf_evaluation_records_its_threat_model(trained, tmp_path):
    data, run = trained
    out = tmp_path / "linf.json"
    assert main(["evaluate", str(run), "--suite", "quick", "--eps", "0.1", "--n", "12", "--data-dir", str(data),
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())
    threat = results["threat_model"]
    assert threat["name"] == "frames-linf" and threat["frame_range"] >= 1
    assert results["n"] == 10 and results["ensemble_accuracy"] <= results["clean_accuracy"]
    assert all(a["accuracy"] >= results["ensemble_accuracy"] for a in results["attacks"])


def test_events_l0_evaluation_records_its_budget(trained, tmp_path):
    data, run = trained
    out = tmp_path / "events.json"
    assert main(["evaluate", str(run), "--suite", "events", "--threat-model", "events-l0", "--budget", "20",
                 "--n", "12", "--data-dir", str(data), "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())
    assert results["threat_model"]["name"] == "events-l0" and results["threat_model"]["budget"] == 20
    assert results["ensemble_accuracy"] <= results["clean_accuracy"]


def test_event_results_verify_analyze_and_report(trained, tmp_path):
    """The rest of the CLI on an event model: --verify re-runs the event attack, analyze measures the
    gap on frames, report reads both."""
    data, run = trained
    results = tmp_path / "events.json"
    assert main(["evaluate", str(run), "--suite", "events", "--threat-model", "events-l0", "--budget", "8",
                 "--data-dir", str(data), "--out", str(results), "--no-progress"]) == 0
    assert main(["evaluate", "--verify", str(results), "--data-dir", str(data), "--no-progress"]) == 0
    analysis = tmp_path / "analysis"
    assert main(["analyze", str(run), "--n", "6", "--draws", "4", "--bisect-steps", "2", "--data-dir", str(data),
                 "--out", str(analysis), "--no-progress"]) == 0
    summary = json.loads((analysis / "analysis.json").read_text())
    assert summary["dataset"] == "cifar10dvs"
    report = tmp_path / "report.md"
    assert main(["report", str(run), str(results), str(analysis), "--out", str(report)]) == 0
    assert "events-l0" in report.read_text()


@pytest.mark.parametrize("trained", ["aedat2"], indirect=True)  # the sharding does not depend on the format
def test_distributed_event_evaluation_equals_the_single_process_run(trained, tmp_path):
    """Under torchrun the batches of an events-l0 evaluation are sharded over the ranks; the merged rows
    must equal a single-process run's (the sparse attack is deterministic, random-events seeded per batch)."""
    data, run = trained

    def launch(nproc, out):
        prefix = [sys.executable, "-m", "spikeguard"] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
             "spikeguard"]
        done = subprocess.run([*prefix, "evaluate", str(run), "--suite", "events", "--threat-model", "events-l0",
                               "--budget", "12", "--num-samples", "10", "--batch-size", "3", "--data-dir", str(data),
                               "--device", "cpu", "--no-progress", "--out", str(out)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(out.read_text()), out.with_suffix(".csv").read_text()

    single, single_csv = launch(1, tmp_path / "single.json")
    merged, merged_csv = launch(2, tmp_path / "merged.json")
    assert merged["ranks"] == 2 and single["ranks"] == 1 and merged["threat_model"] == single["threat_model"]
    assert merged_csv == single_csv


def test_linf_attack_under_the_event_threat_model_is_refused(trained, tmp_path, capsys):
    data, run = trained
    code = main(["evaluate", str(run), "--suite", "quick", "--threat-model", "events-l0", "--budget", "5",
                 "--n", "4", "--data-dir", str(data), "--out", str(tmp_path / "r.json"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "r.json").exists()


def test_data_dir_without_recordings_is_exit_2(tmp_path, capsys):
    (tmp_path / "empty" / "airplane").mkdir(parents=True)
    code = main(["train", "--config", config_file(tmp_path), "--data-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_mixed_formats_are_exit_2(tmp_path, capsys):
    data = make_synthetic_cifar10dvs(tmp_path / "data", per_class=2, fmt="aedat2", seed=0)
    make_synthetic_cifar10dvs(tmp_path / "other", per_class=2, fmt="aedat4", seed=1)
    moved = next((tmp_path / "other").rglob("*.aedat4"))
    moved.rename(next(data.rglob("*.aedat")).parent / moved.name)
    code = main(["train", "--config", config_file(tmp_path), "--data-dir", str(data),
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err and "aedat4" in err
