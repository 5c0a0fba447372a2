import json

import pytest

from spikeguard.cli import main
from spikeguard.demo import DEMO_THREADS, demo_selection


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        assert main(["demo", "--out", str(out), "--defenses", "vanilla,sr", "--epochs", "1", "--n", "24",
                     "--no-progress"]) == 0
    finally:
        capture.undo()
    return out, lines


@pytest.fixture(scope="module")
def demo_out(demo_run):
    return demo_run[0]


def test_demo_prints_the_verdict(demo_run):
    _, lines = demo_run
    verdict = [line for line in lines if line.startswith("Does SR beat vanilla under attack?")]
    assert len(verdict) == 1 and "SR" in verdict[0] and "vanilla" in verdict[0]


def test_demo_results_follow_the_schema(demo_out):
    results = json.loads((demo_out / "results.json").read_text())
    chosen = demo_selection()["chosen"]
    assert results["dataset"] == "digits" and results["eps"] == chosen["eps"] and results["suite"] == "quick"
    assert set(results["models"]) == {"vanilla", "sr"} and results["n_test"] == 24
    for m in results["models"].values():
        assert 0 <= m["ensemble_accuracy"] <= min(m["attacks"].values()) <= m["clean_accuracy"] <= 1
        assert {"fgsm", "pgd-30", "square"} <= set(m["attacks"]) and m["train_seconds"] > 0
    assert results["models"]["sr"]["lamb"] == chosen["lamb"] and results["models"]["vanilla"]["lamb"] == 0
    per_model = json.loads((demo_out / "runs" / "sr" / "results.json").read_text())
    assert per_model["suite"] == "quick" and (demo_out / "runs" / "sr" / per_model["per_sample"]).is_file()


def test_demo_summary_has_every_section(demo_out):
    report = (demo_out / "summary.md").read_text()
    for section in ("| defense |", "## Does SR beat vanilla under attack?", "## How eps, lambda and epochs were chosen",
                    "validation", "## Sanity flags", "## Caveats"):
        assert section in report
    assert "| vanilla |" in report and "| sr |" in report
    assert (demo_out / "runs" / "sr" / "best.pt").is_file()
    full = (demo_out / "report.md").read_text()
    assert "vanilla" in full and "sr" in full and "fgsm" in full.lower()


def test_demo_selection_was_made_on_validation_only():
    selection = demo_selection()
    assert "test split is never" in selection["procedure"]
    assert all("val" in row["what"] for row in selection["table"])


def test_demo_rejects_bad_input(capsys, demo_out, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "d"), "--defenses", "vanilla,magic"]) == 2
    assert "unknown demo defense" in capsys.readouterr().err
    assert main(["demo", "--out", str(demo_out)]) == 2
    assert "already exists" in capsys.readouterr().err


def _models(sr_pgd, van_pgd):
    return {"sr": {"ensemble_accuracy": sr_pgd}, "vanilla": {"ensemble_accuracy": van_pgd}}


def test_verdict_reports_honestly():
    from spikeguard.demo import _verdict

    assert _verdict(_models(0.40, 0.20), 360).startswith("Yes")
    assert _verdict(_models(0.21, 0.20), 360).startswith("Not clearly")
    assert _verdict(_models(0.15, 0.20), 360).startswith("No")


def test_demo_explains_the_mechanism_from_its_own_numbers(demo_run):
    out, lines = demo_run
    results = json.loads((out / "results.json").read_text())
    van, sr = (results["models"][name]["mechanism"] for name in ("vanilla", "sr"))
    # the measured identity: the medians of df/dx and of f (1 - f) dm/dx come from the same samples
    assert van["f_l1"] > 0 and van["m_l1"] > van["f_l1"] and 0 < van["f_one_minus_f"] <= 0.25
    from spikeguard.report.explain import direction

    said = [line for line in lines if line.startswith("From vanilla to sr")]
    assert len(said) == 1
    assert f"||dm/dx||_1 {direction(van['m_l1'], sr['m_l1'])}" in said[0]  # the word follows the numbers
    assert "## What SR changed in the gradient" in (out / "summary.md").read_text()


def _without_times_and_paths(value):
    """A results document with what may differ between two identical runs left out: times and file paths."""
    if isinstance(value, dict):
        return {k: _without_times_and_paths(v) for k, v in value.items()
                if "seconds" not in k and k not in ("checkpoint", "out")}
    if isinstance(value, list):
        return [_without_times_and_paths(v) for v in value]
    return value


def test_the_demo_is_reproducible_in_a_fresh_process(demo_out, tmp_path):
    """The same command in a new process (other hash seed, no earlier tests' random state, the tests' one
    thread not inherited: the demo sets its own thread count) writes the same results: weights (their sha256)
    and every number."""
    import os
    import subprocess
    import sys

    again = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "spikeguard", "demo", "--out", str(again), "--defenses", "vanilla,sr",
                    "--epochs", "1", "--n", "24", "--no-progress"], check=True, env=env, capture_output=True)
    for name in ("results.json", "runs/vanilla/results.json", "runs/sr/results.json"):
        first = _without_times_and_paths(json.loads((demo_out / name).read_text()))
        second = _without_times_and_paths(json.loads((again / name).read_text()))
        assert first == second, name
    assert json.loads((again / "results.json").read_text())["threads"] == DEMO_THREADS
    assert (demo_out / "runs/sr/results.csv").read_text() == (again / "runs/sr/results.csv").read_text()
