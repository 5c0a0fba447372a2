"""`spikeguard report` and the figures, on results files written here in issue 3's schema, run
directories and an analysis of the tiny SNN."""

import json

import pytest
import yaml

from spikeguard.analysis import AnalysisSettings, analyze_model
from spikeguard.analysis.analyze import FORMAT, fallback_attacks, rows_to_csv
from spikeguard.cli import main
from spikeguard.figures import FIGURE_FILES, write_figures
from spikeguard.report import SECTIONS, attack_column, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def attack(name, accuracy, **params):
    return {"name": name, "norm": "linf", "eps": 0.15, "params": params, "estimators": ["triangle:1", "bptr"],
            "accuracy": accuracy, "accuracy_per_estimator": {"triangle:1": accuracy + 0.1, "bptr": accuracy + 0.05},
            "seconds": 1.5}


def results(suite, clean, ensemble, attacks, flags=(), model="digits_cnn"):
    return {"model": model, "dataset": "digits", "n": 100, "eps": 0.15, "suite": suite, "seed": 0,
            "clean_accuracy": clean, "attacks": attacks, "ensemble_accuracy": ensemble, "flags": list(flags),
            "per_sample": "per_sample.csv"}


def make_run(root, name, defense, lamb, files):
    run = root / name
    run.mkdir(parents=True)
    config = {"dataset": "digits", "model": "digits_cnn", "defense": defense, "lamb": lamb, "eps": 0.15}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 1 / e, "val_accuracy": 0.8 + e / 100,
                                                           "grad_l1": 1 / e, "grad_zero_fraction": e / 10}) + "\n"
                                               for e in (1, 2, 3)))
    for file_name, data in files.items():
        (run / file_name).write_text(json.dumps(data))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, _trained_tiny, digits_tensors):
    root = tmp_path_factory.mktemp("report") / "runs"
    quick = [attack("fgsm", 0.5), attack("pgd", 0.2, steps=10), attack("pgd-30", 0.15), attack("pgd", 0.25, steps=10),
             attack("pgd_50", 0.1, steps=50), attack("apgd-ce", 0.08, steps=20)]
    make_run(root, "vanilla", "vanilla", 0.0, {
        "results_quick.json": results("quick", 0.98, 0.05, quick, [{"name": "noise-beats-attack",
                                                                      "detail": "3 samples broken only by noise"}]),
        "results_strong.json": results("strong", 0.98, 0.02, [attack("apgd-ce", 0.03, steps=100)]),
    })
    sr = make_run(root, "sr", "sr", 0.03, {"results.json": results("quick", 0.94, 0.3, quick[:2])})
    # an analysis of the tiny model inside the sr run
    _, (x, y) = digits_tensors
    summary, rows = analyze_model(_trained_tiny, x[:8], y[:8], AnalysisSettings(eps=(0.1, 0.2), draws=2,
                                                                              bisect_steps=1),
                                  *fallback_attacks(0)[:2])
    analysis = sr / "analysis"
    analysis.mkdir()
    summary |= {"format": FORMAT, "model": "digits_cnn", "dataset": "digits", "label": "tiny",
                "attack": {"name": "pgd-20"}, "per_sample": "per_sample.csv"}
    (analysis / "analysis.json").write_text(json.dumps(summary))
    (analysis / "per_sample.csv").write_text(rows_to_csv(rows))
    (root / "notes.json").write_text(json.dumps({"what": "not a results file"}))  # ignored when found by search
    return root


def test_markdown_report_has_every_section_and_the_numbers(runs, tmp_path):
    out = write_report([runs], tmp_path / "report.md")
    text = out.read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in text
    # vanilla: FGSM 50, PGD-10 the lower of two entries (20), PGD-30 15, PGD-50 10, ensemble 5, strong 2
    # (and APGD-CE 8, a column because a suite ran it)
    assert "| vanilla | quick | 100 | 98.0 | 50.0 | 20.0 | 15.0 | 10.0 | 8.0 | 5.0 | 2.0 |" in text
    # sr: no PGD-30/50, APGD or strong suite: absent, not invented
    assert "| sr (lambda 0.03) | quick | 100 | 94.0 | 50.0 | 20.0 | — | — | — | 30.0 | — |" in text
    assert "noise-beats-attack: 3 samples broken only by noise" in text and "no flag raised" in text
    assert "| apgd-ce | linf | 0.15 | triangle:1, bptr |" in text  # other attacks listed with params
    assert "Horowitz" in text and "| sr (lambda 0.03) | body.2 |" in text  # activity of the analysed model
    assert "defense: sr" in text and "lamb: 0.03" in text
    # the mechanism's decomposition of the analysed model, per estimator and point, and its flip distances
    assert "| sr (lambda 0.03) | triangle:1 | clean |" in text and "| sr (lambda 0.03) | bptr | attack_end |" in text
    assert "Flip distance m / ||dm/dx||_1 against the attack" in text and "ratio, margin units" in text
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert sorted(link.split("/")[-1] for link in links) == sorted(FIGURE_FILES.values())
    for link in links:
        image = (out.parent / link).read_bytes()
        assert image.startswith(PNG) and len(image) > 1000
    assert "Absent" not in text.split("## Figures")[1].split("## Configurations")[0]


def test_html_report_embeds_its_figures(runs, tmp_path):
    text = write_report([runs], tmp_path / "report.html", html=True).read_text()
    assert text.startswith("<!DOCTYPE html>")
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert text.count('src="data:image/png;base64,') == len(FIGURE_FILES)
    assert "<td>vanilla</td>" in text and 'src="report' not in text


def test_missing_pieces_are_reported_absent(runs, tmp_path):
    text = write_report([runs / "sr" / "results.json"], tmp_path / "r.md").read_text()
    theory = text.split("## Theory")[1].split("## Activity")[0]
    assert "Absent: no analyses" in theory
    assert "Absent for lack of data" in text  # no sparsity or firing-rate figures without an analysis
    # one results file at one eps, no analysis: an accuracy-vs-eps figure would be a single point
    assert "accuracy_vs_eps.png" not in text and "firing_rates.png" not in text
    assert "Accuracy against eps under the analysis attack and random noise: left out, every results file is at " \
           "one eps (0.15)" in text
    assert (tmp_path / "r_figures" / "comparison.png").exists()
    assert not (tmp_path / "r_figures" / "accuracy_vs_eps.png").exists()


def test_attack_columns():
    assert attack_column({"name": "fgsm"}) == "FGSM"
    assert attack_column({"name": "pgd", "params": {"steps": 10}}) == "PGD-10"
    assert attack_column({"name": "PGD-30"}) == "PGD-30"
    assert attack_column({"name": "pgd", "params": {"steps": 7}}) is None
    assert attack_column({"name": "pgd"}) is None
    assert attack_column({"name": "my label", "attack": "pgd", "params": {"steps": 50}}) == "PGD-50"
    for other in ("rfgsm", "apgd-ce", "square", "random-uniform"):
        assert attack_column({"name": other, "params": {"steps": 10}}) is None


def one_line_error(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_report_bad_input_is_one_line_exit_2(runs, tmp_path, capsys):
    out = str(tmp_path / "r.md")
    one_line_error(capsys, ["report", str(tmp_path / "missing"), "--out", out], "does not exist")
    one_line_error(capsys, ["report", str(runs / "notes.json"), "--out", out], "not a spikeguard results")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["report", str(tmp_path / "empty"), "--out", out], "holds no results")
    one_line_error(capsys, ["report", str(runs), "--out", str(tmp_path)], "is a directory")


def test_results_of_another_model_in_a_run_are_refused(runs, tmp_path, capsys):
    run = make_run(tmp_path, "mixed", "vanilla", 0.0,
                   {"results.json": results("quick", 0.9, 0.1, [], model="vgg11")})
    one_line_error(capsys, ["report", str(run), "--out", str(tmp_path / "r.md")], "vgg11")


def test_report_command_writes_the_file(runs, tmp_path, capsys):
    out = tmp_path / "cli.md"
    assert main(["report", str(runs / "vanilla"), str(runs / "sr" / "analysis"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and "## Theory" in out.read_text()


def test_every_figure_is_written_and_non_empty(runs, tmp_path):
    analysis = json.loads((runs / "sr" / "analysis" / "analysis.json").read_text())
    import csv

    with open(runs / "sr" / "analysis" / "per_sample.csv") as f:
        rows = list(csv.DictReader(f))
    metrics = [json.loads(line) for line in (runs / "sr" / "metrics.jsonl").read_text().splitlines()]
    paths = write_figures({"a": analysis, "b": analysis}, {"a": rows}, {"a": metrics, "b": metrics}, tmp_path / "f",
                          {"a": [(0.15, 0.3, "quick")]}, {"a": {"clean": 0.9, "worst case": 0.3}})
    assert set(paths) == set(FIGURE_FILES)
    for path in paths.values():
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    assert write_figures({}, {}, {}, tmp_path / "none") == {}


# ---- issue 15: readable reports -------------------------------------------------------------------------

CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const out = document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify({scroll: document.documentElement.scrollWidth, view: window.innerWidth,
    images: Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0),
    details: document.querySelectorAll("details").length, verdict: !!document.querySelector("section.verdict")});
  document.body.appendChild(out);
});
</script>"""


def _chromium():
    import os
    import shutil

    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set and Chromium is missing: the README's test command installs it (apt-get install "
                        "chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return found


def test_html_report_renders_in_a_real_browser(runs, tmp_path):
    """Headless Chromium loads the page: the verdict first, details folded, nothing wider than the window,
    every figure decoded."""
    import re
    import subprocess

    browser = _chromium()
    page = write_report([runs], tmp_path / "report.html", html=True).read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=800,900",
                           "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["verdict"] and layout["details"] >= 5
    assert layout["scroll"] <= layout["view"], layout  # no horizontal overflow at 800 px
    assert len(layout["images"]) == len(FIGURE_FILES) and all(w > 0 for w in layout["images"]), layout


def test_report_of_a_run_and_its_analysis_directory(runs, tmp_path):
    """The run already takes in its analysis; naming the analysis directory too is not an error."""
    text = write_report([runs / "sr", runs / "sr" / "analysis"], tmp_path / "r.md").read_text()
    assert "1 results file(s), 1 analysis(es), 1 run(s)" in text
    assert "Absent" not in text.split("## Theory")[1].split("## Activity")[0]


def test_report_shows_the_columns_the_suite_ran(tmp_path):
    run = make_run(tmp_path, "van", "vanilla", 0.0, {"results.json": results("quick", 0.9, 0.1, [
        attack("fgsm", 0.5), attack("pgd", 0.2, steps=30), attack("apgd-ce", 0.15, steps=30),
        {**attack("square", 0.12, queries=300, survivors_only=True), "estimators": []},
        {**attack("random-sign", 0.8, draws=5), "attack": "random-sign"}])})
    text = write_report([run], tmp_path / "r.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| model | suite | n | clean"))
    assert header == ("| model | suite | n | clean | FGSM | PGD-30 | apgd-ce (alone) | square (cumulative) | "
                      "ensemble (suite) | ensemble (strong suite) |")
    assert "steps 30" in text and '{"steps"' not in text  # parameters for people, not JSON


HEADLINE = {"accuracy": 0.31, "is_bound": False, "label": "not a bound",
            "why": ["zero gradients under every estimator on 12 samples"], "tried": ["triangle:1", "bpda"]}


def test_a_headline_that_is_not_a_bound_is_shown_as_such(tmp_path, capsys):
    from spikeguard.commands.evaluate import print_evaluation
    from spikeguard.demo import demo_report, demo_selection

    data = results("quick", 0.9, 0.31, [attack("fgsm", 0.5)]) | {"headline": HEADLINE, "notes": []}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    md = write_report([path], tmp_path / "r.md").read_text()
    verdict = md.split("## Verdict")[1].split("## Robust accuracy")[0]
    assert "not a bound: zero gradients under every estimator on 12 samples" in verdict
    page = write_report([path], tmp_path / "r.html", html=True).read_text()
    assert '<td class="bad">not a bound: zero gradients' in page
    print_evaluation(data)
    assert "headline 31.0%: not a bound (zero gradients under every estimator on 12 samples); tried: " \
           "triangle:1, bpda" in capsys.readouterr().out
    model = {"clean_accuracy": 0.9, "attacks": {"fgsm": 0.5}, "ensemble_accuracy": 0.31, "flags": [],
             "train_seconds": 1, "best_epoch": 1, "lamb": 0.0, "input_gradient": {"l1": 1.0, "zero_fraction": 0.1}}
    summary = demo_report({"models": {"vanilla": model | {"headline": HEADLINE}}, "n_test": 10, "eps": 0.15,
                           "suite": "quick"}, demo_selection())
    assert "- vanilla: headline 31.0%: not a bound" in summary
    # without the key: as before, no headline anywhere
    del data["headline"]
    path.write_text(json.dumps(data))
    assert "not a bound" not in write_report([path], tmp_path / "r2.md").read_text()
    assert "not a bound" not in demo_report({"models": {"vanilla": model}, "n_test": 10, "eps": 0.15,
                                             "suite": "quick"}, demo_selection())


def test_training_curves_have_whole_epochs_and_no_flat_zero_panel():
    from spikeguard.figures import training_figure

    records = [{"epoch": e, "loss": 1 / e, "val_accuracy": 0.5 + e / 10, "grad_l1": 1.0, "grad_zero_fraction": 0.0}
               for e in (1, 2, 3)]
    fig = training_figure({"vanilla": records})
    fig.canvas.draw()
    axes = fig.axes
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    zero = axes[3]
    assert zero.get_ylim()[1] >= 1 and any("0 at every epoch" in t.get_text() for t in zero.texts)


def test_results_of_every_schema_version_are_reported(tmp_path):
    """Each results.json format spikeguard has written (tests/fixtures/results/) is read through the schema's
    reader: a version-0 file (before the suites) is a results file too, its flags absent, not 'none'."""
    from pathlib import Path

    fixtures = sorted((Path(__file__).parent / "fixtures" / "results").glob("v*.json"))
    assert len(fixtures) >= 5
    text = write_report(fixtures, tmp_path / "r.md").read_text()
    assert f"{len(fixtures)} results file(s)" in text
    verdict = text.split("## Verdict")[1].split("## Robust accuracy")[0]
    rows = [line for line in verdict.splitlines() if line.startswith("| results |")]
    assert len(rows) == len(fixtures)
    # v0: no headline, no flags, and no per-sample rows to say which attack broke samples first
    assert rows[0].endswith("| 100.0 | 66.7 | — | — (no per-sample file) | — |")
    v4 = rows[[f.stem for f in fixtures].index("v4-trust")]
    assert "| 100.0 | 50.0 | not a bound: zero_gradient" in v4  # v4: the headline says why
    assert "FGSM" in text.split("## Robust accuracy")[1].split("## Attacks")[0]


def test_broke_most_names_the_attack_that_broke_most_samples_first(tmp_path):
    """Square attacks only survivors, so its cumulative accuracy is the lowest; it broke 1 sample, PGD-30 3."""
    from spikeguard.report.sections import broke_most
    from spikeguard.schema import SampleOutcome, write_samples

    attacks = [attack("fgsm", 0.6), attack("pgd-30", 0.3), attack("square", 0.2)]
    data = results("quick", 1.0, 0.2, attacks)
    data["per_sample"] = "r.csv"
    (tmp_path / "r.json").write_text(json.dumps(data))
    broken = ["fgsm/bptr", "pgd-30/triangle:1", "pgd-30/bptr", "pgd-30/bptr", "square", "", "clean", "clean"]
    write_samples(tmp_path / "r.csv", [SampleOutcome(i, 0, 1.0, robust=0.0 if by else 1.0, broken_by=by)
                                       for i, by in enumerate(broken)])
    text = write_report([tmp_path / "r.json"], tmp_path / "report.md").read_text()
    verdict = text.split("## Verdict")[1].split("## Robust")[0]
    assert "pgd-30 (3 samples)" in verdict and "square (" not in verdict
    (tmp_path / "r.csv").unlink()  # without the per-sample rows nothing can say which attack broke most
    from spikeguard.report.collect import collect
    assert broke_most(collect([tmp_path / "r.json"]).results[0]) == "— (no per-sample file)"


def test_terminal_tables_fit_80_columns_without_cutting_a_cell():
    """The demo's table (six models, nine columns) and a study's status table on an 80-column console: every
    line fits, nothing is cut with an ellipsis, every attack name and number is there whole."""
    import io

    from rich.console import Console

    from spikeguard.commands.study import _print_study
    from spikeguard.results import print_table

    columns = ["clean", "fgsm (alone)", "pgd-30 (alone)", "apgd-ce-30 (alone)", "square (cumulative)",
               "random-uniform (alone)", "random-sign (alone)", "transfer (alone)", "worst case"]
    models = ["vanilla", "sr (lambda 0.03)", "gn (lambda 0.01)", "digits_cnn rate encoder", "sparsity (lambda 0.3)"]
    console = Console(width=80, record=True, file=io.StringIO())
    print_table({m: {c: (i + 1) / 100 + j / 1000 for j, c in enumerate(columns)} for i, m in enumerate(models)},
                "digits test split (n=360), eps 0.15, suite quick", console)
    cells = [{"id": "dataset-digits_defense-sr_lamb-0.03_seed-0", "status": "done",
              "numbers": {"clean": 0.981, "worst_case": 0.305}, "timing": {"train": 1234}},
             {"id": "dataset-digits_defense-vanilla_seed-1", "status": "failed",
              "reason": "the checkpoint 'cells/x/best.pt' cannot be read (truncated file); rerun the study"}]
    _print_study("studies/a-study-directory-with-a-long-name", None,
                 {"name": "tiny-digits", "counts": {"done": 1, "failed": 1}, "cells": cells}, console)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text and "..." not in text
    words = text.split()
    for word in ["random-uniform", "random-sign", "(cumulative)", "digits_cnn", "encoder", "98.1", "30.5", "1234",
                 "failed", "(truncated"]:
        assert word in words, word
    for i in range(len(models)):
        for j in range(len(columns)):
            assert f"{100 * ((i + 1) / 100 + j / 1000):.1f}" in words
