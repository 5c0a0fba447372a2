"""`spikeguard demo`: train small SNNs on the embedded digits data with each defense, attack each one on
the test split with the `quick` attack suite, and write results.json, summary.md (the demo's verdict and
how its settings were chosen) and report.md (``spikeguard report`` over the runs, with figures).

The demo's eps, lambda and epochs come from ``demo_selection.json``, written by
experiments/select_demo_settings.py from the validation split only (never test).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import torch

from spikeguard.analysis.mechanism import clean_medians
from spikeguard.config import TrainConfig
from spikeguard.data import load_dataset, stack
from spikeguard.errors import UserError
from spikeguard.evaluation import EvalConfig, Target, load_suite, run_evaluation
from spikeguard.files import write_json, write_text
from spikeguard.progress import Reporter
from spikeguard.provenance import file_sha256
from spikeguard.report import write_report
from spikeguard.report.explain import Mechanism, mechanism_sentences
from spikeguard.results import column_label, headline_text, print_table
from spikeguard.rundir import BEST, METRICS, prepare_run_dir
from spikeguard.schema import EvalRecord, Headline
from spikeguard.training import train

DEMO_DEFENSES = ("vanilla", "at", "rat", "gr", "sr", "sr_star")
DEMO_SUITE = "quick"
# Test images attacked by default: 240 of the 360 keep the whole demo under 6 minutes on 2 quiet CPU cores
# (all 360 took 6.8 minutes with the 7-member quick suite and the escalation); --n 360 attacks them all.
DEMO_N = 240
# Intra-op threads: a sum split over threads rounds differently, so the numbers are bit-identical only for one
# thread count (on one machine and seed). Two, the cores of the machine the README's table was made on; the
# tiny digits network gains little from more.
DEMO_THREADS = 2


def demo_selection() -> dict:
    return json.loads(resources.files("spikeguard").joinpath("demo_selection.json").read_text())


def demo_config(defense: str, chosen: dict, seed: int) -> TrainConfig:
    # lamb: the config's default on digits, which is this selection's (spikeguard.config.validated_lamb)
    return TrainConfig(dataset="digits", defense=defense, eps=chosen["eps"], epochs=chosen["epochs"], lr=chosen["lr"],
                       batch_size=chosen["batch_size"], steps=chosen["train_pgd_steps"], seed=seed).resolved()


def run_demo(out: str | Path, defenses: list[str] | None = None, epochs: int | None = None, seed: int = 0,
             progress: bool = True, n: int | None = None, threads: int = DEMO_THREADS) -> dict:
    """The demo with ``threads`` intra-op threads (restored afterwards): its numbers are bit-identical for
    the same machine, seed and thread count, and differ in rounding at another thread count."""
    if threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_demo(out, defenses, epochs, seed, progress, n, threads)
    finally:
        torch.set_num_threads(before)


def _run_demo(out: str | Path, defenses: list[str] | None, epochs: int | None, seed: int, progress: bool,
              n: int | None, threads: int) -> dict:
    defenses = list(defenses or DEMO_DEFENSES)
    n = DEMO_N if n is None else n
    unknown = [d for d in defenses if d not in DEMO_DEFENSES]
    if unknown:
        raise UserError(f"unknown demo defense(s) {', '.join(unknown)}; choose from {', '.join(DEMO_DEFENSES)}")
    if epochs is not None and epochs < 1:
        raise UserError(f"epochs must be at least 1, got {epochs}")
    out = prepare_run_dir(out)
    selection = demo_selection()
    chosen = {**selection["chosen"], **({"epochs": epochs} if epochs else {})}
    suite = load_suite(DEMO_SUITE)
    data = load_dataset("digits", seed=seed)
    results = {"dataset": "digits", "eps": chosen["eps"], "suite": suite.name, "n_test": len(data.test),
               "seed": seed, "threads": threads, "models": {}}
    news, table = Reporter(enabled=progress), {}
    news.line(f"demo: {len(defenses)} models ({', '.join(defenses)}), {chosen['epochs']} epochs each, attacked with "
              f"the {suite.name} suite at eps {chosen['eps']:g} on {n or len(data.test)} test images; writing {out}")
    for number, defense in enumerate(defenses, start=1):
        cfg = demo_config(defense, chosen, seed)
        news.line(f"demo: model {number} of {len(defenses)}: {defense}"
                  + (f" (lambda {cfg.lamb:g})" if cfg.lamb else "") + ": training, then the attacks")
        run = train(cfg, out / "runs" / defense, progress=progress, data=data)
        best_pt = run.run_dir / BEST
        target = Target(run.model, cfg.model or "digits_cnn", "digits", data.test, data.num_classes, cfg.eps,
                        str(best_pt), file_sha256(best_pt), train=data.train)  # train: the escalation's substitute
        evaluation = run_evaluation(EvalConfig(suite=suite, eps=chosen["eps"], n=n, seed=seed, progress=progress),
                                    target)
        evaluation.write(run.run_dir / "results.json")
        record = evaluation.record
        best = best_epoch_metrics(run.run_dir, run.best_epoch)
        results["models"][defense] = demo_entry(record, run, cfg.lamb or 0.0, best)
        x_test, y_test = stack(data.test, record.n)  # the attacked images, under the training estimator
        results["models"][defense]["mechanism"] = clean_medians(run.model, x_test, y_test)
        results["n_test"] = record.n
        # after every model, so an interrupted demo keeps its work and its readable summary
        write_json(out / "results.json", results)
        write_text(out / "summary.md", demo_report(results, selection))
        write_report([out / "runs"], out / "report.md")
        print(f"{defense}: clean {record.clean_accuracy:.3f}, worst case over the {suite.name} suite "
              f"{record.ensemble_accuracy:.3f} (trained in {run.seconds:.0f}s, attacked in {record.seconds:.0f}s)"
              + (f"; {headline_text(record.headline)}" if record.headline else ""), flush=True)
        table[defense] = {"clean": record.clean_accuracy, **{column_label(a): a.accuracy for a in record.attacks},
                          "worst case": record.ensemble_accuracy}
    print_table(table, title=f"digits test split (n={results['n_test']}), eps {chosen['eps']:g}, suite {suite.name}")
    print(f"Does SR beat vanilla under attack? {_verdict(results['models'], results['n_test'])}")
    for line in _mechanism_lines(results["models"]):
        print(line)
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'} and {out / 'report.md'}")
    return results


def demo_entry(record: EvalRecord, run, lamb: float, best: dict) -> dict:
    """One model's entry in the demo's own results.json (a summary of several models, not an evaluation's)."""
    entry = {"clean_accuracy": record.clean_accuracy, "attacks": {a.name: a.accuracy for a in record.attacks},
             "ensemble_accuracy": record.ensemble_accuracy, "flags": [f.to_json() for f in record.flags or []],
             "train_seconds": run.seconds, "eval_seconds": record.seconds, "best_epoch": run.best_epoch,
             "val_accuracy": run.best_val_accuracy, "lamb": lamb,
             "input_gradient": {"l1": best["grad_l1"], "zero_fraction": best["grad_zero_fraction"],
                                "sr_penalty": best.get("val_sr_penalty")}}  # training's validation batch
    if record.headline:
        entry["headline"] = record.headline.to_json()
    return entry


def best_epoch_metrics(run_dir: Path, epoch: int) -> dict:
    for line in (run_dir / METRICS).read_text().splitlines():
        record = json.loads(line)
        if record["epoch"] == epoch:
            return record
    raise UserError(f"'{run_dir}/metrics.jsonl' has no record of epoch {epoch}")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def demo_report(results: dict, selection: dict) -> str:
    models, n = results["models"], results["n_test"]
    attacks = list(dict.fromkeys(a for m in models.values() for a in m["attacks"]))
    lines = [
        "# spikeguard demo: robust spiking networks on digits",
        "",
        f"Data: scikit-learn digits (8x8, 10 classes), test split of {n} images, never used to choose anything. "
        f"Threat model: l-infinity, eps = {results['eps']:g} in [0, 1] pixel scale. Attacks: the "
        f"`{results['suite']}` suite (spikeguard/suites/{results['suite']}.yaml); each attack's accuracy is its "
        "per-sample worst case over its backward estimators, and 'worst case' is the per-sample worst case over "
        "every attack and estimator. Per-sample outcomes are in runs/<defense>/results.csv.",
        "",
        "Accuracies in percent on the test split. The last four columns are medians over the attacked test "
        "images under the training estimator: ||df/dx||_1, the input gradient of the true-class probability f that "
        "SR's penalty estimates; ||dm/dx||_1, that of the logit margin m (f = sigmoid(m)); the confidence factor "
        "f (1 - f) that links them (df/dx = f (1 - f) dm/dx); and the first-order flip distance m / ||dm/dx||_1.",
        "",
        "| defense | lambda | clean | " + " | ".join(attacks) + " | worst case | best epoch | train s | "
        "grad f l1 | grad m l1 | f (1 - f) | flip distance |",
        "|---|---|---|" + "---|" * len(attacks) + "---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        g = m.get("mechanism") or {}
        cells = " | ".join(_pct(m["attacks"][a]) if a in m["attacks"] else "-" for a in attacks)
        measured = " | ".join("-" if g.get(k) is None else f"{g[k]:.3g}"
                              for k in ("f_l1", "m_l1", "f_one_minus_f", "flip_distance"))
        lines.append(f"| {name} | {m['lamb']:g} | {_pct(m['clean_accuracy'])} | {cells} | "
                     f"{_pct(m['ensemble_accuracy'])} | {m['best_epoch']} | {m['train_seconds']:.0f} | {measured} |")
    headlines = {name: Headline.from_json(m["headline"]) for name, m in models.items() if m.get("headline")}
    not_bounds = [f"- {name}: {headline_text(h)}" for name, h in headlines.items() if not h.is_bound]
    if not_bounds:
        lines += ["", "Worst-case numbers that are not a bound (the evaluation could not trust a gradient it "
                      "needed; do not claim them as robust accuracy):", "", *not_bounds]
    lines += ["", "## Does SR beat vanilla under attack?", "", _verdict(models, n), ""]
    lines += ["## What SR changed in the gradient", "", *_mechanism_lines(models), ""]
    lines += ["## Sanity flags", ""]
    flagged = [(name, f) for name, m in models.items() for f in m["flags"]]
    lines += [f"- {name}: **{f['name']}**: {f['detail']}" for name, f in flagged] or ["None fired."]
    lines += ["", "## How eps, lambda and epochs were chosen", "", selection["procedure"], ""]
    lines += ["| candidate | value | validation result |", "|---|---|---|"]
    for row in selection["table"]:
        lines.append(f"| {row['what']} | {row['value']} | {row['result']} |")
    lines += ["", f"Chosen: {', '.join(f'{k} = {v}' for k, v in selection['chosen'].items())}.", ""]
    lines += [
        "## Caveats", "",
        f"- The `{results['suite']}` suite is small so the demo stays fast; `spikeguard evaluate --suite strong` "
        "runs the full estimator bank, APGD-100 and Square-5000, and can only lower these numbers.",
        f"- One seed, {n} test images: a difference of a few points is within sampling noise "
        f"(binomial standard error about {_pct(math.sqrt(0.25 / max(n, 1)))} points at 50%).",
    ]
    return "\n".join(lines) + "\n"


def _verdict(models: dict, n: int) -> str:
    if "sr" not in models or "vanilla" not in models:
        return "Not measured: the demo ran without both vanilla and sr."
    sr, van = models["sr"]["ensemble_accuracy"], models["vanilla"]["ensemble_accuracy"]
    se = math.sqrt((sr * (1 - sr) + van * (1 - van)) / n)
    diff = sr - van
    if diff > 2 * se:
        word = "Yes"
    elif diff > 0:
        word = "Not clearly"
    else:
        word = "No"
    verdict = (f"{word}: SR {_pct(sr)}% against vanilla {_pct(van)}% worst-case accuracy (difference {100 * diff:+.1f} "
               f"points, two standard errors = {200 * se:.1f} points).")
    return verdict


def _mechanism_lines(models: dict) -> list[str]:
    """Sentences about the mechanism from the demo's own measurements (spikeguard/report/explain.py): SR
    against vanilla and SR* against AT, where both ran."""
    lines = []
    for base, other in (("vanilla", "sr"), ("at", "sr_star")):
        if base in models and other in models and all("mechanism" in models[n] for n in (base, other)):
            before, after = (Mechanism.from_medians(models[name]["mechanism"]) for name in (base, other))
            if before is None or after is None:
                lines.append(f"{base} against {other}: not comparable, a median was not measured (no finite value).")
                continue
            lines.append(" ".join(mechanism_sentences(before, after, base, other)))
    return lines or ["Not measured: the demo ran without vanilla and sr (or at and sr_star)."]
