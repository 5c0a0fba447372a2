"""Studies (issue 16): a 2x2 digits plan end to end from the CLI, reruns that skip finished cells, a killed
cell that resumes, --parallel 2 and submitit's local executor giving the sequential run's numbers, the Slurm
job specification (dry run and a stand-in sbatch), and the aggregation's intervals.

One sequential baseline is shared; every cell trains one epoch and is attacked on 32 samples by a tiny suite.
"""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from spikeguard.cli import main
from spikeguard.errors import UserError
from spikeguard.study.plan import load_plan, plan_from_dict
from spikeguard.study.summary import Group, build, cell_text, mean_interval, trade_off_figure

TINY_SUITE = {"name": "tiny", "checks": {"unbounded_n": 4, "unbounded_steps": 2},
              "escalation": {"decision_queries": 50, "substitute_epochs": 2, "substitute_queries": 200, "transfer_steps": 5,
                             "estimate_steps": 5, "estimate_directions": 8, "square_queries": 50, "square_restarts": 1},
              "attacks": [{"attack": "fgsm", "estimators": ["triangle:1"]},
                          {"attack": "pgd", "steps": 10, "estimators": ["triangle:1"]}]}
TRAIN = {"epochs": 1, "time_steps": 2, "batch_size": 256}
PLAN = {"name": "tiny-digits", "grid": {"dataset": ["digits"], "defense": ["vanilla", "sr"], "seed": [0, 1]},
        "train": TRAIN, "evaluate": [{"suite": "tiny.yaml", "n": 32, "batch_size": 16}]}


def run_cli(argv):
    """(exit code, stdout, stderr) of the CLI run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def write_plan(folder: Path, plan: dict, name: str = "plan.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_SUITE))
    path = folder / name
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def numbers(study: Path) -> dict:
    data = json.loads((study / "study.json").read_text())
    return {cell["id"]: cell.get("numbers") for cell in data["cells"]}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    plan = write_plan(root, PLAN)
    code, out, err = run_cli(["study", plan, "--out", root / "seq", "--quiet"])
    assert code == 0, err
    return plan, root / "seq", out


def test_a_2x2_plan_runs_end_to_end_from_the_cli(baseline):
    plan, study, out = baseline
    data = json.loads((study / "study.json").read_text())
    assert [c["id"] for c in data["cells"]] == ["defense-vanilla_seed-0", "defense-vanilla_seed-1",
                                                 "defense-sr_seed-0", "defense-sr_seed-1"]
    assert data["counts"] == {"done": 4} and data["threads"] == 1
    for cell in data["cells"]:
        run = study / cell["dir"]
        assert {"config.yaml", "metrics.jsonl", "best.pt", "last.pt", "results-1-tiny.json"} <= {p.name for p in run.iterdir()}
        assert cell["threads"] == 1 and set(cell["timing"]) == {"train", "evaluate-1"}
        n = cell["numbers"]
        assert 0 <= n["worst_case"] <= n["clean"] <= 1 and n["evaluations"][0]["suite"] == "tiny"
        assert n["evaluations"][0]["columns"]["FGSM"] >= n["worst_case"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["defense"] == cell["settings"]["defense"] and config["seed"] == cell["settings"]["seed"]
        assert config.get("lamb", 0) == (0.03 if config["defense"] == "sr" else 0)  # the validated digits lamb
    assert "defense-sr_seed-1" in out and "done" in out  # the status table
    summary = (study / "summary.md").read_text()
    assert "(n=2)" in summary and " ± " in summary and "paired seed(s)" in summary
    assert (study / "summary.html").read_text().startswith("<!DOCTYPE html>")
    log = (study / "study.log").read_text()
    assert "cell 4 of 4: defense-sr_seed-1" in log and "0 finished before, 4 to run" in log
    # a cell is an ordinary run directory: the other commands take it
    code, _, err = run_cli(["report", study / "cells" / "defense-sr_seed-0", "--out", study.parent / "one.md"])
    assert code == 0, err


def test_a_second_run_skips_every_finished_cell(baseline, tmp_path):
    plan, study, _ = baseline
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("cells/*/results-1-tiny.json")}
    before = numbers(study)
    code, out, err = run_cli(["study", study, "--status"])
    assert code == 0 and out.count("│ done") == 4, out
    code, _, err = run_cli(["study", plan, "--out", study])  # the same plan into the same directory
    assert code == 0, err
    assert "4 finished before, 0 to run" in err
    assert "tiny-digits: 4 done; wrote" in err and "{'" not in err  # counts in words, not a dict
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and numbers(study) == before
    code, _, err = run_cli(["report", study])
    assert code == 0 and "summary.md" in err + _
    code, _, err = run_cli(["report", study, "--out", tmp_path / "x.md"])
    assert code == 2 and "drop --out" in err


def test_cells_kept_without_checkpoints_are_skipped_and_a_missing_result_is_refused(baseline, tmp_path):
    """studies/results/ keeps records, results and analyses but no checkpoints (.gitignore there): a rerun on
    another machine skips those cells; one whose result was removed cannot be redone from files it lacks."""
    plan, study, _ = baseline
    kept = tmp_path / "kept"
    shutil.copytree(study, kept, ignore=shutil.ignore_patterns("*.pt", "*.log"))
    assert not list(kept.glob("cells/*/*.pt"))
    before = numbers(kept)
    code, _, err = run_cli(["study", plan, "--out", kept])
    assert code == 0, err
    assert "4 finished before, 0 to run" in err and numbers(kept) == before
    (kept / "cells" / "defense-sr_seed-1" / "results-1-tiny.json").unlink()
    code, _, err = run_cli(["study", plan, "--out", kept])
    assert "3 finished before, 1 to run" in err
    record = json.loads((kept / "cells" / "defense-sr_seed-1.json").read_text())
    assert record["status"] == "failed" and "no training checkpoint" in record["reason"]
    assert numbers(kept)["defense-vanilla_seed-0"] == before["defense-vanilla_seed-0"]


def test_a_cell_of_another_study_with_the_same_recipe_is_copied_not_rerun(baseline, tmp_path):
    """reuse: a finished cell of a study beside this one, of the same training configuration, evaluations,
    analysis and threads, is copied with its numbers; the summary says so; another thread count copies nothing."""
    from spikeguard.study.reuse import reuse_cells

    plan, study, _ = baseline
    other = write_plan(plan.parent, {**PLAN, "name": "reuser", "grid": {"defense": ["sr", "vanilla"], "seed": [1]},
                                     "reuse": ["seq", "missing"]}, name="reuser.yaml")
    code, _, err = run_cli(["study", other, "--out", study.parent / "reuser"])
    assert code == 0, err
    assert "cell defense-sr: copied from seq/defense-sr_seed-1" in err and "0 to run" in err
    assert numbers(study.parent / "reuser") == {"defense-sr": numbers(study)["defense-sr_seed-1"],
                                                "defense-vanilla": numbers(study)["defense-vanilla_seed-1"]}
    assert "2 of them were copied from seq" in (study.parent / "reuser" / "summary.md").read_text()
    same = plan_from_dict({**PLAN, "name": "t", "evaluate": load_plan(plan).evaluate, "reuse": ["seq"]})
    assert len(reuse_cells(study.parent / "same", same, [c.id for c in same.cells])) == 4  # threads 1: all copied
    threads = plan_from_dict({**PLAN, "name": "t", "threads": 2, "evaluate": load_plan(plan).evaluate,
                              "reuse": ["seq"]})
    assert reuse_cells(study.parent / "t", threads, [c.id for c in threads.cells]) == {}  # beside seq, yet not copied
    assert not (study.parent / "t").exists()


def test_parallel_2_gives_the_sequential_numbers(baseline):
    plan, study, _ = baseline
    code, _, err = run_cli(["study", plan, "--out", study.parent / "par", "--parallel", "2", "--quiet"])
    assert code == 0, err
    assert numbers(study.parent / "par") == numbers(study)
    assert (study.parent / "par" / "cells" / "defense-sr_seed-1.log").read_text().strip()  # each cell's own output


def test_submitit_local_executor_gives_the_sequential_numbers(baseline):
    plan, study, _ = baseline
    code, _, err = run_cli(["study", plan, "--out", study.parent / "sub", "--executor", "submitit-local",
                            "--parallel", "2", "--quiet"])
    assert code == 0, err
    assert numbers(study.parent / "sub") == numbers(study)
    assert any((study.parent / "sub" / "submitit").glob("*_log.out"))


def test_a_killed_cell_resumes_training_and_finishes(tmp_path):
    plan = write_plan(tmp_path, {"name": "kill", "grid": {"defense": ["vanilla"]},
                                 "train": {"epochs": 4, "time_steps": 2, "batch_size": 16},
                                 "evaluate": [{"suite": "tiny.yaml", "n": 16}]})
    study = tmp_path / "study"
    cell = study / "cells" / "defense-vanilla"
    process = subprocess.Popen([sys.executable, "-m", "spikeguard", "study", str(plan), "--out", str(study), "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (cell / "last.pt").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the study ended before its first checkpoint"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    code, out, _ = run_cli(["study", study, "--status"])
    assert code == 0 and "killed" in out, out
    finished = len((cell / "metrics.jsonl").read_text().splitlines())
    assert finished < 4  # killed inside training
    code, _, err = run_cli(["study", study])
    assert code == 0, err
    assert f"resuming {cell}" in err or f"epochs {finished + 1} to 4" in err, err
    epochs = [json.loads(line)["epoch"] for line in (cell / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert json.loads((study / "study.json").read_text())["counts"] == {"done": 1}


@pytest.mark.parametrize("sent, code, how", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_an_interrupted_study_says_what_it_kept_and_how_to_resume(tmp_path, sent, code, how):
    plan = write_plan(tmp_path, {"name": "stop", "grid": {"defense": ["vanilla"]},
                                 "train": {"epochs": 4, "time_steps": 2, "batch_size": 16},
                                 "evaluate": [{"suite": "tiny.yaml", "n": 16}]})
    study = tmp_path / "my study"  # a space: the resume command must quote it
    cell = study / "cells" / "defense-vanilla"
    process = subprocess.Popen([sys.executable, "-m", "spikeguard", "study", str(plan), "--out", str(study), "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as on a terminal
    try:
        deadline = time.time() + 120
        while not (cell / "metrics.jsonl").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the study ended before training its cell"
        process.send_signal(sent)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    lines = err.strip().splitlines()
    assert process.returncode == code, err
    assert lines[-1] == (f"study stop interrupted ({how}): 0 of 1 cells finished and kept; an unfinished cell "
                         f"resumes from its last checkpoint and evaluated batches; resume with: spikeguard study "
                         f"'{study}'"), err
    assert "Traceback" not in err


def test_sigterm_on_a_parallel_study_stops_its_workers_and_starts_no_queued_cell(tmp_path):
    plan = write_plan(tmp_path, {"name": "pool", "grid": {"defense": ["vanilla"], "seed": [0, 1, 2]},
                                 "train": {"epochs": 20, "time_steps": 2, "batch_size": 16},
                                 "evaluate": [{"suite": "tiny.yaml", "n": 16}]})
    study = tmp_path / "study"
    first = [study / "cells" / f"seed-{s}" / "metrics.jsonl" for s in (0, 1)]
    process = subprocess.Popen([sys.executable, "-m", "spikeguard", "study", str(plan), "--out", str(study),
                                "--parallel", "2", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not all(p.exists() for p in first) and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the study ended before both workers trained"
        process.send_signal(signal.SIGTERM)  # to the coordinator alone, as a scheduler or `kill PID` sends it
        _, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, err
    assert "resume with: spikeguard study" in err.strip().splitlines()[-1], err
    code, out, _ = run_cli(["study", study, "--status"])
    statuses = {cell["id"]: cell["status"] for cell in json.loads((study / "study.json").read_text())["cells"]}
    # the two running cells were stopped (their workers are gone, so they read as killed); the third never ran
    assert statuses == {"seed-0": "killed", "seed-1": "killed", "seed-2": "pending"}, (statuses, out)


def test_a_killed_evaluation_resumes_from_its_kept_batches(baseline, tmp_path):
    """A cell killed after the first of its two evaluation batches: the rerun attacks only the second, and
    the cell's numbers equal the uninterrupted run's."""
    from spikeguard.evaluation import EvalConfig, run_evaluation
    from spikeguard.evaluation.targets import load_target

    _, study, _ = baseline
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    cell = copy / "cells" / "defense-sr_seed-1"
    out = cell / "results-1-tiny.json"
    out.unlink()
    out.with_suffix(".csv").unlink()
    config = EvalConfig(suite=str(Path(study).parent / "tiny.yaml"), n=32, batch_size=16, progress=False)
    run_evaluation(config, load_target(cell, None, None, None, None, False), batches=[0], keep_batches=out)
    assert len(list((cell / ".results-1-tiny.json.batches").glob("batch-*.json"))) == 1
    code, _, err = run_cli(["study", copy])
    assert code == 0, err
    assert "3 finished before, 1 to run" in err and "batch 1 of 2" not in err and "batch 2 of 2" in err, err
    assert numbers(copy) == numbers(study)
    assert not (cell / ".results-1-tiny.json.batches").exists()


def test_the_analysis_step_records_gradient_activity_and_energy(tmp_path):
    plan = write_plan(tmp_path, {"name": "one", "grid": {"defense": ["sr"]}, "train": TRAIN,
                                 "evaluate": [{"suite": "tiny.yaml", "n": 8}],
                                 "analyze": {"eps": [0.15], "n": 4, "draws": 1, "bisect_steps": 1}})
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s", "-q"])
    assert code == 0, err
    cell = json.loads((tmp_path / "s" / "study.json").read_text())["cells"][0]
    analysis = cell["numbers"]["analysis"]
    assert analysis["grad_l1"] > 0 and 0 <= analysis["firing_rate"] <= 1 and analysis["energy_joules"] > 0
    assert analysis["gap"][0]["eps"] == pytest.approx(0.15)
    assert (tmp_path / "s" / "cells" / "defense-sr" / "analysis" / "analysis.json").is_file()
    assert not (tmp_path / "s" / "cells" / "defense-sr" / ".analysis.partial").exists()
    mechanism = analysis["mechanism"]  # the decomposition under the training estimator and two others
    assert set(mechanism["estimators"]) == {"triangle:1", "triangle:4", "bptr"}
    assert mechanism["identity_max_relative_error"] < 1e-3 and mechanism["flip"]["samples"] >= 0
    assert cell["numbers"]["train_sr_penalty"] > 0 and cell["numbers"]["train_margin_penalty"] > 0
    summary = (tmp_path / "s" / "summary.md").read_text()
    assert "The mechanism: what SR changes in the gradient" in summary and "flip distance" in summary


# ---- the cluster path without a cluster ---------------------------------------------------------------------

def test_slurm_dry_run_writes_the_job_specification_and_runs_nothing(baseline):
    plan, study, _ = baseline
    out = study.parent / "slurm"
    code, _, err = run_cli(["study", plan, "--out", out, "--executor", "slurm", "--partition", "gpu",
                            "--gpus-per-cell", "2", "--time-per-cell", "90", "--dry-run"])
    assert code == 0, err
    script = (out / "slurm-array.sbatch").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --time=90", "#SBATCH --array=0-3%4", "#SBATCH --cpus-per-task=1", "#SBATCH --nodes=1",
                 "#SBATCH --job-name=tiny-digits"):
        assert line in script, script
    assert "submitit.core._submit" in script
    assert json.loads((out / "study.json").read_text())["counts"] == {"pending": 4}
    code, _, err = run_cli(["study", plan, "--out", study.parent / "slurm2", "--executor", "slurm", "--dry-run"])
    assert code == 2 and "needs a partition" in err and len(err.strip().splitlines()) == 1


def test_slurm_submission_records_queued_cells(baseline, tmp_path, monkeypatch):
    """The real submission path against a stand-in sbatch that records its script and answers a job id."""
    plan, study, _ = baseline
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho 'Submitted batch job 4242'\n")
    fake.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it to know it is on Slurm
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "queued"
    code, _, err = run_cli(["study", plan, "--out", out, "--executor", "slurm", "--partition", "gpu"])
    assert code == 0, err
    assert "#SBATCH --array=0-3%4" in (tmp_path / "submitted.sh").read_text()
    cells = json.loads((out / "study.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["queued"] * 4
    assert [c["job"] for c in cells] == [f"4242_{k}" for k in range(4)]
    code, out_text, _ = run_cli(["study", out, "--status"])
    assert code == 0 and out_text.count("│ queued") == 4


def test_slurm_without_slurm_is_one_line(baseline, tmp_path, monkeypatch):
    plan, _, _ = baseline
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s", "--executor", "slurm", "--partition", "gpu", "-q"])
    assert code == 2 and "cannot submit to Slurm from here" in err and len(err.strip().splitlines()) == 1


# ---- plans and their errors ------------------------------------------------------------------------------

def test_plan_grid_collapses_settings_that_do_not_apply(tmp_path):
    plan = plan_from_dict({"name": "p", "grid": {"defense": ["vanilla", "sr"], "lamb": [0.01, 0.1], "seed": [0, 1]},
                           "train": TRAIN, "evaluate": [{"suite": "quick"}]})
    ids = [c.id for c in plan.cells]
    assert ids == ["defense-vanilla_seed-0", "defense-vanilla_seed-1", "defense-sr_lamb-0.01_seed-0",
                   "defense-sr_lamb-0.01_seed-1", "defense-sr_lamb-0.1_seed-0", "defense-sr_lamb-0.1_seed-1"]
    assert plan.cell("defense-sr_lamb-0.1_seed-1").config.lamb == 0.1


def test_a_list_of_grids_unites_their_cells_once_each_under_one_naming(tmp_path):
    """More seeds for the main comparison only: the union of the grids' cells, a shared point once, named by
    what varies over the whole plan whatever order a grid lists its fields in."""
    plan = plan_from_dict({"name": "p", "train": TRAIN, "evaluate": [{"suite": "quick"}],
                           "grid": [{"defense": ["vanilla", "sr"], "lamb": 0.03, "seed": [0, 1, 2]},
                                    {"seed": [0, 1], "lamb": [0.01, 0.03], "defense": "sr"}]})
    ids = [c.id for c in plan.cells]
    assert ids == ["defense-vanilla_seed-0", "defense-vanilla_seed-1", "defense-vanilla_seed-2",
                   "defense-sr_lamb-0.03_seed-0", "defense-sr_lamb-0.03_seed-1", "defense-sr_lamb-0.03_seed-2",
                   "defense-sr_lamb-0.01_seed-0", "defense-sr_lamb-0.01_seed-1"]
    assert plan.cell("defense-sr_lamb-0.01_seed-1").config.lamb == 0.01
    assert plan_from_dict(plan.to_dict()).fingerprint() == plan.fingerprint()  # plan.yaml reads back alike
    with pytest.raises(UserError, match=r"grid 2: grid must be a mapping"):
        plan_from_dict({"name": "p", "train": TRAIN, "evaluate": [{"suite": "quick"}],
                        "grid": [{"seed": [0]}, [1, 2]]})
    with pytest.raises(UserError, match="lamb is both in grid and train"):
        plan_from_dict({"name": "p", "train": {**TRAIN, "lamb": 0.1}, "evaluate": [{"suite": "quick"}],
                        "grid": [{"seed": [0]}, {"lamb": [0.01]}]})


def test_an_ensemble_cell_averages_its_members_after_they_finish_and_is_attacked_as_one_model(tmp_path):
    """The plan's ensembles: a cell per selector, evaluated after its members from their best checkpoints;
    its clean accuracy is the averaged logits' (recomputed here), the summary sets it beside its members, and
    kept without checkpoints it still counts as finished. A student distilled from the ensemble (its cell id as
    teacher) trains after the members, from their checkpoints, and is paired with SR alone."""
    import torch

    from spikeguard.checkpoint import load_model, read_checkpoint
    from spikeguard.data import load_dataset
    from spikeguard.models.ensemble import LogitAverage
    from spikeguard.provenance import file_sha256

    student = {"dataset": "digits", "defense": "sr_distill", "seed": 0, "teacher": "ensemble_defense-sr"}
    plan = write_plan(tmp_path, {**PLAN, "grid": [PLAN["grid"], student], "ensembles": [{"defense": "sr"}]})
    student_id = "defense-sr_distill_seed-0_teacher-ensemble_defense-sr"
    assert [(c.id, c.teachers) for c in load_plan(plan).cells][-2:] == [
        (student_id, ("defense-sr_seed-0", "defense-sr_seed-1")), ("ensemble_defense-sr", ())]
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s"])
    assert code == 0, err
    study = tmp_path / "s"
    record = json.loads((study / "cells" / "ensemble_defense-sr.json").read_text())
    assert record["status"] == "done" and set(record["timing"]) == {"evaluate-1"}
    assert record["numbers"]["members"] == ["defense-sr_seed-0", "defense-sr_seed-1"]
    members = [load_model(study / "cells" / m)[0] for m in record["numbers"]["members"]]
    x, y = zip(*[load_dataset("digits", seed=0).test[i] for i in range(32)])
    with torch.no_grad():
        predicted = LogitAverage(members)(torch.stack(x)).argmax(1)
    assert record["numbers"]["clean"] == pytest.approx((predicted == torch.tensor(y)).float().mean().item())
    results = json.loads((study / "cells" / "ensemble_defense-sr" / "results-1-tiny.json").read_text())
    assert results["model"].startswith("ensemble of 2") and results["checkpoint"].count("best.pt") == 2
    summary = (study / "summary.md").read_text()
    assert "defense sr, ensemble 2: worst case" in summary and "its 2 members alone" in summary
    started = [line.split("cell ")[1].split(":")[0] for line in (study / "study.log").read_text().splitlines()
               if ": running (pid" in line]  # the members, then the cells needing them ahead of the others
    assert started[2:] == [student_id, "ensemble_defense-sr", "defense-vanilla_seed-0", "defense-vanilla_seed-1"]
    assert set(started[:2]) == {"defense-sr_seed-0", "defense-sr_seed-1"}
    assert json.loads((study / "cells" / f"{student_id}.json").read_text())["status"] == "done"
    teachers = [study / "cells" / m / "best.pt" for m in record["numbers"]["members"]]
    assert yaml.safe_load((study / "cells" / student_id / "config.yaml").read_text())["teacher"] == [
        str(t.parent.absolute()) for t in teachers]
    assert [t["sha256"] for t in read_checkpoint(study / "cells" / student_id / "best.pt")["teachers"]] == [
        file_sha256(t) for t in teachers]
    assert "defense sr_distill, teacher ensemble_defense-sr against dataset digits, defense sr: worst case" in summary
    kept = tmp_path / "kept"
    shutil.copytree(study, kept, ignore=shutil.ignore_patterns("*.pt", "*.log"))
    code, _, err = run_cli(["study", plan, "--out", kept])
    assert code == 0 and "6 finished before, 0 to run" in err, err
    shutil.rmtree(kept / "cells" / student_id)  # a student to train again, whose teachers were kept without models
    (kept / "cells" / f"{student_id}.json").unlink()
    code, _, err = run_cli(["study", plan, "--out", kept])
    reason = json.loads((kept / "cells" / f"{student_id}.json").read_text())["reason"]
    assert reason.startswith("teacher cell 'defense-sr_seed-0' has no best.pt"), reason
    # another study reusing this one copies the members and the ensemble (members of the same recipes), and
    # trains its own student of the same recipe: a student is taught by its own study's cells, never copied
    reuser = write_plan(tmp_path, {**PLAN, "name": "reuser", "grid": [{"defense": "sr", "seed": [0, 1]}, {
        "defense": "sr_distill", "seed": 0, "teacher": "ensemble_defense-sr"}], "ensembles": [{"defense": "sr"}],
        "reuse": ["s"]}, name="reuser.yaml")
    code, _, err = run_cli(["study", reuser, "--out", tmp_path / "reuser"])
    assert code == 0 and "3 finished before, 1 to run" in err and err.count("copied from s/") == 3, err
    copied = json.loads((tmp_path / "reuser" / "cells" / "ensemble_defense-sr.json").read_text())
    assert copied["reused_from"] == "s/ensemble_defense-sr" and copied["numbers"]["clean"] == record["numbers"]["clean"]


@pytest.mark.parametrize("ensembles, message", [
    ([{"defense": "at"}], "matches 0 cell(s)"), ([{"seed": 0}], "names a seed"),
    ([{"dataset": "digits"}], "differ in more than their seed"), ([{"defence": "sr"}], "did you mean 'defense'"),
    ([[1]], "ensembles must list mappings")])
def test_a_bad_ensemble_selector_is_refused_before_anything_runs(ensembles, message):
    with pytest.raises(UserError, match=re.escape(message)):
        plan_from_dict({**PLAN, "evaluate": [{"suite": "quick"}], "ensembles": ensembles})


@pytest.mark.parametrize("teacher, message", [
    (["ensemble_defense-sr", "/some/run"], "mixes cells of the plan with paths"),
    ("defense-sr_distill_seed-1_teacher-ensemble_defense-sr", "is itself a distilled student")])
def test_a_students_teacher_must_be_cells_of_the_plan_that_are_not_students(teacher, message):
    parts = [PLAN["grid"], {"defense": "sr_distill", "seed": 1, "teacher": "ensemble_defense-sr"},
             {"defense": "sr_distill", "seed": 0, "teacher": [teacher]}]
    with pytest.raises(UserError, match=re.escape(message)):
        plan_from_dict({**PLAN, "grid": parts, "evaluate": [{"suite": "quick"}], "ensembles": [{"defense": "sr"}]})


def test_the_logit_average_is_attacked_through_every_member_under_one_estimator():
    import torch
    from conftest import tiny_spec

    from spikeguard.models import create_model
    from spikeguard.models.ensemble import LogitAverage
    from spikeguard.snn.control import estimator, spiking_layers

    torch.manual_seed(0)
    members = [create_model(tiny_spec(time_steps=2)).eval() for _ in range(3)]
    ensemble = LogitAverage(members)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(ensemble(x)[:, 3].sum(), x)
    alone = [torch.autograd.grad(m(x)[:, 3].sum(), x)[0] for m in members]
    torch.testing.assert_close(grad, torch.stack(alone).mean(0))
    assert all(g.abs().sum() > 0 for g in alone)
    with estimator(ensemble, "sigmoid:4"):
        assert len(spiking_layers(ensemble)) == 3 * len(spiking_layers(members[0]))
        assert all(layer.estimator.name == "sigmoid:4" for m in members for layer in spiking_layers(m))


def test_an_ann_cell_leaves_out_the_spiking_settings_and_is_attacked_once_per_attack(tmp_path):
    plan = write_plan(tmp_path, {"name": "twin", "grid": {"network": ["snn", "ann"],
                                                          "train_estimator": ["triangle:1", "sigmoid:4"]},
                                 "train": TRAIN, "evaluate": [{"suite": "tiny.yaml", "n": 16}]})
    assert [c.id for c in load_plan(plan).cells] == ["network-snn_train_estimator-triangle_1",
                                                     "network-snn_train_estimator-sigmoid_4", "network-ann"]
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s", "-q"])
    assert code == 0, err
    ann = tmp_path / "s" / "cells" / "network-ann"
    config = yaml.safe_load((ann / "config.yaml").read_text())
    assert config["network"] == "ann" and "time_steps" not in config and "train_estimator" not in config
    results = json.loads((ann / "results-1-tiny.json").read_text())
    assert all(a["estimators"] == ["native"] for a in results["attacks"])  # one exact gradient
    snn = json.loads((tmp_path / "s" / "cells" / "network-snn_train_estimator-sigmoid_4" / "results-1-tiny.json")
                     .read_text())
    assert snn["attacks"][0]["estimators"] == ["triangle:1"]
    assert yaml.safe_load((tmp_path / "s" / "cells" / "network-snn_train_estimator-sigmoid_4" / "config.yaml")
                          .read_text())["train_estimator"] == "sigmoid:4"


@pytest.mark.parametrize("change, message", [
    ({"grid": {"defense": ["vanilla"], "colour": ["red"]}}, "unknown config key(s) colour"),
    ({"grid": {"defense": ["gr"], "lamb": [0.1, -1.0]}}, "cell defense gr, lamb -1: lamb must be"),
    ({"evaluate": [{"suite": "no-such-suite"}]}, "no-such-suite"),
    ({"evaluate": [{"suite": "quick", "steps": 3}]}, "unknown key(s) steps"),
    ({"grid": {"device": ["cpu"]}}, "chosen where a cell runs"),
    ({"threads": 0}, "threads must be"),
    ({"name": "a b"}, "name must be"),
])
def test_a_bad_plan_is_one_line_before_anything_runs(tmp_path, change, message):
    plan = write_plan(tmp_path, {**PLAN, **change})
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s"])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_plan_typos_name_their_line_and_the_key_meant(tmp_path):
    write_plan(tmp_path, PLAN)
    text = yaml.safe_dump(PLAN, sort_keys=False)
    plan = tmp_path / "typo.yaml"
    plan.write_text(text.replace("grid:", "gird:"))
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{plan}: unknown key(s) gird (line 2: did you mean 'grid'?); allowed: name, grid" in err, err
    lines = text.splitlines()
    suite_line = next(i for i, line in enumerate(lines, start=1) if "suite: tiny.yaml" in line)
    plan.write_text(text.replace("suite: tiny.yaml", "sutie: tiny.yaml\n  suite: tiny.yaml")
                    .replace("defense:", "defence:"))
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s"])
    defense_line = next(i for i, line in enumerate(lines, start=1) if "defense:" in line)
    assert code == 2 and f"unknown config key(s) defence (line {defense_line}: did you mean 'defense'?)" in err, err
    plan.write_text(text.replace("suite: tiny.yaml", "sutie: tiny.yaml\n  suite: tiny.yaml"))
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s"])
    assert code == 2 and f"evaluation 1: unknown key(s) sutie (line {suite_line}: did you mean 'suite'?)" in err, err


def test_another_plan_into_a_study_directory_is_refused(baseline, tmp_path):
    plan, study, _ = baseline
    other = write_plan(tmp_path, {**PLAN, "train": {**TRAIN, "epochs": 2}})
    code, _, err = run_cli(["study", other, "--out", study])
    assert code == 2 and "another plan" in err
    code, _, err = run_cli(["study", plan, "--out", study, "--executor", "nowhere"])
    assert code == 2 and "unknown executor 'nowhere'" in err


# ---- aggregation ---------------------------------------------------------------------------------------

def test_mean_interval_is_the_student_t_interval():
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)  # t(0.975, 2) * sd / sqrt(n)
    assert mean_interval([0.5]) == (0.5, None)


def _cell(defense, seed, worst, lamb=None, clean=0.9):
    settings = {"defense": defense, **({"lamb": lamb} if lamb is not None else {}), "seed": seed}
    evaluation = {"suite": "paper", "clean": clean, "headline": worst, "columns": {"FGSM": worst + 0.1, "PGD-10": worst}}
    return {"id": f"{defense}-{lamb}-{seed}", "settings": settings, "status": "done",
            "numbers": {"clean": clean, "worst_case": worst, "train_grad_l1": 1.0 / (1 + (lamb or 0)),
                        "evaluations": [evaluation]}}


def test_the_summary_pairs_seeds_and_draws_the_lambda_trade_off(tmp_path):
    cells = [_cell("vanilla", s, 0.10 + 0.01 * s) for s in range(3)]
    cells += [_cell("sr", s, 0.30 + 0.01 * s, lamb=lamb) for lamb in (0.01, 0.1) for s in range(3)]
    study = {"format": "spikeguard-study/1", "name": "synthetic", "threads": 1, "counts": {"done": 9},
             "plan": {"evaluate": [{"suite": "paper"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    text = "\n".join(str(b) for b in build(tmp_path))
    assert "worst case +20.0 points against vanilla [+20.0, +20.0] over 3 paired seed(s): better than vanilla" in text
    assert "11.0 ± 2.5 (n=3)" in text  # vanilla's worst case: mean 11%, t(0.975, 2) * 1 / sqrt(3) points
    assert "'FGSM', 'PGD-10'" in text  # the published protocol's columns
    groups = [Group({"defense": "vanilla"}, cells[:3], 3), Group({"defense": "sr", "lamb": 0.01}, cells[3:6], 3),
              Group({"defense": "sr", "lamb": 0.1}, cells[6:], 3)]
    figure = trade_off_figure(groups, tmp_path / "f.png")
    assert figure.stat().st_size > 10_000


@pytest.mark.parametrize("gains, verdict", [((0.10, 0.12, 0.11), "better than vanilla"),
                                            ((-0.10, 0.12, 0.02), "undecided (the interval spans 0)"),
                                            ((-0.10, -0.12, -0.11), "worse than vanilla")])
def test_the_paired_verdict_reads_the_interval(tmp_path, gains, verdict):
    cells = [_cell("vanilla", s, 0.30) for s in range(3)] + [_cell("sr", s, 0.30 + g, lamb=0.03)
                                                             for s, g in enumerate(gains)]
    study = {"format": "spikeguard-study/1", "name": "v", "threads": 1, "counts": {"done": 6},
             "plan": {"evaluate": [{"suite": "paper"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    assert f"over 3 paired seed(s): {verdict}." in "\n".join(str(b) for b in build(tmp_path))


@pytest.mark.parametrize("trained_with", ["triangle:1", "sigmoid:4"])
def test_the_estimator_section_sets_the_training_estimators_number_beside_the_strongest(tmp_path, trained_with):
    """Per seed, each estimator's worst over the bank-wide gradient attacks (an attack under a few estimators
    is left out); the training estimator's own number beside the strongest, both from the cells."""
    cells = []
    for seed in range(2):
        cell = _cell("sr", seed, 0.20, lamb=0.03)
        cell["settings"]["train_estimator"] = trained_with
        cell["numbers"]["evaluations"][0]["per_estimator"] = {
            "PGD-50": {"triangle:1": 0.60 + 0.02 * seed, "sigmoid:4": 0.40, "bptr": 0.30},
            "FGSM": {"triangle:1": 0.50, "sigmoid:4": 0.55, "bptr": 0.35},
            "APGD-T": {"triangle:1": 0.01, "bptr": 0.01}}  # under two estimators only: not compared
        cells.append(cell)
    study = {"format": "spikeguard-study/1", "name": "e", "threads": 1, "counts": {"done": 2},
             "plan": {"evaluate": [{"suite": "strong"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    text = "\n".join(str(b) for b in build(tmp_path))
    own = "50.0 ± 0.0 (n=2)" if trained_with == "triangle:1" else "40.0 ± 0.0 (n=2)"
    assert f"'{trained_with}', '{own}', '30.0 ± 0.0 (n=2)', 'bptr 30.0, sigmoid:4 40.0, triangle:1 50.0'" in text
    assert (tmp_path / "figures" / "estimators.png").stat().st_size > 10_000 and "estimators.png" in text


def test_a_combined_defense_is_paired_with_each_part_and_with_vanilla_whatever_its_own_settings(tmp_path):
    """SR + GR against SR alone and GR alone (registry's 'combines'), and against vanilla although it sets
    gr_lamb, which vanilla does not read; the words follow the intervals."""
    cells = [_cell("vanilla", s, 0.05) for s in range(3)]
    cells += [_cell("sr", s, 0.30 + 0.01 * s, lamb=0.03, clean=0.95) for s in range(3)]
    cells += [_cell("gr", s, 0.40, clean=0.90) for s in range(3)]
    for s in range(3):
        cell = _cell("sr_gr", s, 0.35 + 0.01 * s, lamb=0.01, clean=0.95)
        cell["settings"]["gr_lamb"] = 1.0
        cells.append(cell)
    study = {"format": "spikeguard-study/1", "name": "c", "threads": 1, "counts": {"done": 12},
             "plan": {"evaluate": [{"suite": "paper"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    text = "\n".join(str(b) for b in build(tmp_path))
    assert ("defense sr_gr, lamb 0.01, gr_lamb 1: worst case +31.0 points against vanilla [+28.5, +33.5] over 3 "
            "paired seed(s): better than vanilla.") in text
    assert ("defense sr_gr, lamb 0.01, gr_lamb 1 against defense sr, lamb 0.03: worst case +5.0 points [+5.0, +5.0] "
            "over 3 seeds: higher; clean +0.0 points [+0.0, +0.0] over 3 seeds: undecided.") in text
    assert "against defense gr: worst case -4.0 points [-6.5, -1.5] over 3 seeds: lower; clean +5.0 points" in text


def _energy_cell(defense, seed, worst, rates, lamb=None):
    """A cell whose analysis holds two spiking layers' firing rates; SOPs and energy follow from them."""
    cell = _cell(defense, seed, worst, lamb=lamb)
    layers = [{"name": name, "neurons": 100, "firing_rate": rate, "silent_fraction": 0.5 - rate, "sops": 1e4 * rate}
              for name, rate in zip(("conv1.neuron", "fc1.neuron"), rates)]
    sops = sum(layer["sops"] for layer in layers)
    cell["numbers"]["analysis"] = {"firing_rate": sum(rates) / 2, "sops": sops, "energy_joules": 1e-12 * sops + 1e-9,
                                   "ann_energy_joules": 5e-9, "layers": layers}
    cell["machine"], cell["threads"], cell["timing"] = "Test CPU, 2 logical CPUs, no GPU", 1, {"train": 60, "evaluate-1": 120}
    return cell


@pytest.mark.parametrize("sr_fires_more", [True, False])
def test_the_energy_section_pairs_energy_and_robustness_by_seed_per_layer(tmp_path, sr_fires_more):
    """Energy ratios and worst-case gains against vanilla come from the cells' numbers, per layer too, and the
    summary says where and how long the cells ran; reversing the firing reverses the ratio."""
    up, down = (0.3, 0.1) if sr_fires_more else (0.1, 0.3)
    cells = [_energy_cell("vanilla", s, 0.10, (0.1 + 0.01 * s, 0.1)) for s in range(3)]
    cells += [_energy_cell("sr", s, 0.30, (up + 0.01 * s, 0.2 if sr_fires_more else 0.05), lamb=0.03) for s in range(3)]
    study = {"format": "spikeguard-study/1", "name": "energy", "threads": 1, "counts": {"done": 6},
             "plan": {"evaluate": [{"suite": "strong"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    text = "\n".join(str(b) for b in build(tmp_path))
    vanilla_sops = [1e4 * (0.1 + 0.01 * s) + 1e4 * 0.1 for s in range(3)]
    sr_sops = [1e4 * (up + 0.01 * s) + 1e4 * (0.2 if sr_fires_more else 0.05) for s in range(3)]
    ratios = [(1e-12 * b + 1e-9) / (1e-12 * a + 1e-9) for a, b in zip(vanilla_sops, sr_sops)]
    mean, half = mean_interval(ratios)
    assert f"energy per inference {mean:.2f}x [{mean - half:.2f}, {mean + half:.2f}] (n=3)" in text
    assert (mean > 1) == sr_fires_more
    assert "worst case +20.0 points [+20.0, +20.0] (n=3)" in text
    per_uj = cell_text([10.0 / (1e6 * (1e-12 * e + 1e-9)) for e in vanilla_sops], False)  # worst 10% per µJ
    assert f"'{per_uj}'" in text
    assert "fc1.neuron" in text and "Test CPU, 2 logical CPUs, no GPU (6 cells)" in text
    assert "0.30 h of cell time in all (median 3.0 min per cell" in text  # 6 cells of 60 + 120 s
    assert (tmp_path / "figures" / "energy.png").stat().st_size > 10_000


def test_each_group_is_compared_with_the_vanilla_of_its_own_network(tmp_path):
    """In a 2 x 2 of networks and defenses, the ANN's SR is paired with the ANN's vanilla, never the SNN's, in
    the verdict and the energy lines."""
    cells = []
    for network, base, gain in (("snn", 0.05, 0.20), ("ann", 0.10, 0.45)):
        for seed in range(3):
            for defense, worst in (("vanilla", base), ("sr", base + gain)):
                cell = _energy_cell(defense, seed, worst, (0.1, 0.1), lamb=0.03 if defense == "sr" else None)
                cell["settings"] = {"network": network, **cell["settings"]}
                cells.append(cell)
    study = {"format": "spikeguard-study/1", "name": "twin", "threads": 1, "counts": {"done": 12},
             "plan": {"evaluate": [{"suite": "strong"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    text = "\n".join(str(b) for b in build(tmp_path))
    assert "network ann, defense sr, lamb 0.03: worst case +45.0 points against vanilla [+45.0, +45.0]" in text
    assert "network snn, defense sr, lamb 0.03: worst case +20.0 points against vanilla" in text
    assert "network ann, defense sr, lamb 0.03 against network ann, defense vanilla, paired by seed" in text
    assert "network ann, defense sr, lamb 0.03 against network snn" not in text
    assert ("gain of network snn, defense sr, lamb 0.03 over its vanilla minus that of network ann, defense sr, "
            "lamb 0.03: -25.0 points [-25.0, -25.0] over 3 seeds: smaller.") in text


def _mechanism_cell(defense, seed, m_l1, confidence, lamb=None):
    """A cell whose analysis holds the mechanism's medians: ||df/dx||_1 = f (1 - f) ||dm/dx||_1."""
    cell = _cell(defense, seed, 0.2, lamb=lamb)
    point = {"f_l1": {"median": confidence * m_l1, "mean": confidence * m_l1}, "m_l1": {"median": m_l1, "mean": m_l1},
             "f_one_minus_f": {"median": confidence, "mean": confidence},
             "m_l1_over_l2": {"median": 5.0, "mean": 5.0}, "flip_distance": {"median": 2 / m_l1, "mean": 2 / m_l1}}
    mechanism = {"eps": 0.15, "training_estimator": "triangle:1", "batchnorm": "eval",
                 "estimators": {"triangle:1": {"clean": point, "half_step": point, "attack_end": point},
                                "bptr": {"clean": point}},
                 "identity_max_relative_error": 1e-7, "surrogate_zeros": {"triangle:1": {"body.2": 0.5}},
                 "flip": {"samples": 100, "flip_distance": {"median": 2 / m_l1}, "min_eps_adv": {"median": 0.1},
                          "rank_correlation": 0.8, "agreement_with_attack": 0.85,
                          "two_step_agreement_with_attack": 0.9, "min_eps_agreement_with_attack": 0.95}}
    cell["numbers"]["analysis"] = {"mechanism": mechanism, "gap": [{"ratio_abs": 10.0, "ratio_margin_abs": 5.0}]}
    return cell


@pytest.mark.parametrize("reverse", [False, True])
def test_the_summary_says_what_the_decomposition_shows_and_flips_with_the_numbers(tmp_path, reverse):
    """SR's margin gradient four times smaller but its confidence factor ten times larger: the penalised
    ||df/dx||_1 rises. Reversed numbers (vanilla given SR's) make every direction word turn."""
    van, sr = (30.0, 0.004), (7.5, 0.04)
    if reverse:
        van, sr = sr, van
    cells = [_mechanism_cell("vanilla", s, *van) for s in range(2)]
    cells += [_mechanism_cell("sr", s, *sr, lamb=0.1) for s in range(2)]
    study = {"format": "spikeguard-study/1", "name": "mech", "threads": 1, "counts": {"done": 4},
             "plan": {"evaluate": [{"suite": "paper"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    text = "\n".join(str(b) for b in build(tmp_path))
    if not reverse:
        assert "||dm/dx||_1 falls 4.0x (30 to 7.5)" in text and "estimates, rises 2.5x" in text
        assert "lower confidence hides it" in text
    else:
        assert "||dm/dx||_1 rises 4.0x (7.5 to 30)" in text and "estimates, falls 2.5x" in text
        assert "grew more confident" in text
    assert (tmp_path / "figures" / "decomposition.png").is_file()
    assert "4.00x" in text if not reverse else "0.25x" in text  # vanilla / SR under bptr


def test_a_one_seed_study_page_shows_its_numbers_and_figure_open(tmp_path):
    """One seed: the verdict gives each group's numbers and says why there is no interval; the headline table
    and the trade-off figure are open on the page (not in a fold), the figure two panels wide."""
    import struct

    from spikeguard.study.summary import counts_text, write_summary

    cells = [_cell("vanilla", 0, 0.10), _cell("sr", 0, 0.30, lamb=0.01), _cell("sr", 0, 0.35, lamb=0.1)]
    cells.append({**_cell("sr", 1, 0.3, lamb=0.1), "status": "failed", "numbers": None})
    study = {"format": "spikeguard-study/1", "name": "one-seed", "threads": 1, "counts": {"done": 3, "failed": 1},
             "plan": {"evaluate": [{"suite": "paper"}]}, "cells": cells}
    (tmp_path / "study.json").write_text(json.dumps(study))
    markdown, page = write_summary(tmp_path)
    text = markdown.read_text()
    assert "worst case 30.0% against vanilla's 10.0% (+20.0 points) on seed 0 only: with one seed no interval" in text
    assert "| defense sr, lamb 0.1 | 1 of 2 | 90.0 (n=1) | 35.0 (n=1) |" in text and "3 done, 1 failed" in text
    html = page.read_text()
    opened = html.split("<details>")[0]  # everything before the first fold
    assert "<td>35.0 (n=1)</td>" in opened and opened.count('src="data:image/png;base64,') == 1
    png = (tmp_path / "figures" / "tradeoff.png").read_bytes()
    assert struct.unpack(">I", png[16:20])[0] <= 1000  # two panels wide: shown near its own size, not shrunk
    assert counts_text({"done": 4, "failed": 1}) == "4 done, 1 failed"


def test_plan_file_suite_paths_are_kept_absolute(tmp_path):
    plan = load_plan(write_plan(tmp_path, PLAN))
    assert Path(plan.evaluate[0]["suite"]) == (tmp_path / "tiny.yaml").resolve()
    with pytest.raises(UserError, match="evaluation 1 must be a mapping with a suite"):
        plan_from_dict({**PLAN, "evaluate": [{"n": 3}]})


def test_importing_the_study_cli_loads_no_torch():
    code = ("import sys, spikeguard.cli, spikeguard.study.plan, spikeguard.study.state, spikeguard.study.summary; "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_status_of_a_directory_without_a_study_is_one_line(tmp_path):
    code, _, err = run_cli(["study", tmp_path, "--status"])
    assert code == 2 and "not a study directory" in err
    shutil.rmtree(tmp_path)
