"""One evaluation end to end: the suite on the chosen samples, the checks that catch a weak evaluation,
and the results record (results.json plus a per-sample CSV beside it)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn

from spikeguard.attacks import pgd
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.attacks.events import sparse_events
from spikeguard.errors import UserError
from spikeguard.evaluation import bank, flags
from spikeguard.evaluation.runner import BROKEN, SuiteRunner, make_batches, run_suite
from spikeguard.evaluation.stochastic import correct_fraction
from spikeguard.evaluation.suites import ITERATIVE, Suite
from spikeguard.evaluation.summary import attack_labels, finish_rows, summarize, write_csv
from spikeguard.evaluation.threat_models import ThreatModel, make_threat_model
from spikeguard.files import write_json

SWEEP_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
BUDGET_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def check_eps(eps: float) -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise UserError(f"eps must be a non-negative number, got {eps}")
    return float(eps)


def evaluate(model: nn.Module, dataset, suite: Suite, eps: float, *, num_classes: int, n: int | None = None,
             batch_size: int = 256, seed: int = 0, device: torch.device | str = "cpu", draws: int | None = None,
             source: nn.Module | None = None, eps_sweep: bool = False, progress: bool = True,
             batches=None, distributed: bool = False, threat_model: str = "linf", event_budget: int | None = None,
             frame_range: int | None = None) -> tuple[dict, list[dict]]:
    """(results without file names, per-sample rows). See runner.py for how outcomes are scored.

    ``threat_model``: linf (images), frames-linf (event frames, eps relative to ``frame_range`` R) or
    events-l0 (at most ``event_budget`` whole events changed per sample; the suite's event attacks only).
    results["threat_model"] says what was allowed (threat_models.py).

    ``distributed``: inside a torch.distributed process group, each rank attacks a contiguous block of
    the batches and the rows are gathered on every rank. Batches are seeded by their number, so the
    merged result equals a single-process run."""
    eps = check_eps(eps)
    if n is not None and n < 1:
        raise UserError(f"n must be at least 1, got {n}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if draws is not None and draws < 1:
        raise UserError(f"EoT draws must be at least 1, got {draws}")
    if len(dataset) == 0:
        raise UserError("the evaluation split is empty")
    threat = make_threat_model(threat_model, eps=eps, budget=event_budget, frame_range=frame_range)
    threat.check_sample(dataset[0][0])
    threat.check_suite(suite, transfer=source is not None)
    if num_classes < 4 and any(s.attack in ("apgd-t", "fab-t", "autoattack") for s in suite.attacks):
        raise UserError(f"suite '{suite.name}' has targeted attacks, which need at least 4 classes; the data set "
                        f"has {num_classes}")
    if eps_sweep and not threat.events:  # (events-l0: check_suite made sure a sparse-events attack is there)
        sweep_attack(suite)  # refuse a suite it cannot sweep before the long work
    start = time.perf_counter()
    if distributed:
        from spikeguard.distributed import shard_indices

        total = math.ceil(min(n or len(dataset), len(dataset)) / batch_size)
        batches = shard_indices(total)
    rows, facts = run_suite(model, dataset, suite, eps, num_classes=num_classes, n=n, batch_size=batch_size,
                            seed=seed, device=device, draws=draws, source=source, batches=batches,
                            progress=progress, threat=threat)
    if distributed:
        from spikeguard.distributed import gather_objects

        parts = gather_objects((rows, facts))
        rows = [row for part_rows, _ in parts for row in part_rows]
        facts = {**facts, "ranks": len(parts),  # seconds summed over ranks: the compute spent, not wall time
                 "seconds": {k: sum(f["seconds"][k] for _, f in parts) for k in facts["seconds"]}}
    labels = attack_labels(suite, rows)
    rows = finish_rows(rows, labels)
    results = {"suite": suite.name, "eps": eps, "threat_model": threat.describe(), "seed": seed, "n": len(rows),
               "batch_size": batch_size,
               "cascade": suite.cascade, "stochastic": facts["stochastic"], "eot_draws": facts["draws"],
               "ranks": facts.get("ranks", 1),
               **summarize(rows, suite, labels, eps, facts["seconds"], threat)}
    results["gradient_check"] = _gradient_check(rows, facts["gradient_estimators"])
    found = flags.stochastic_flag(facts["stochastic"], facts["draws"])
    found += flags.per_sample_flags(rows, suite, labels, facts["gradient_estimators"])
    runner = SuiteRunner(model, suite, eps, num_classes, seed, facts["draws"], threat=threat)
    with forked_rng(device, seed=seed):  # a stochastic model's draws: reproducible, the caller's RNG untouched
        unbounded, unbounded_n = unbounded_accuracy(runner, dataset, suite, facts["n"], device)
    results["unbounded_accuracy"] = unbounded
    results["unbounded_check"] = unbounded_check(suite, threat)
    found += flags.unbounded_flag(unbounded, unbounded_n, results["unbounded_check"]["attack"])
    if eps_sweep and threat.events:
        results["budget_sweep"] = budget_sweep(model, dataset, suite, threat, num_classes, facts, seed, device,
                                               progress)
        found += flags.sweep_flags(results["budget_sweep"], num_classes, min(facts["n"], 200), radius="budget")
    elif eps_sweep:
        results["eps_sweep"] = sweep(model, dataset, suite, eps, num_classes, facts, seed, device, progress)
        found += flags.sweep_flags(results["eps_sweep"], num_classes, min(facts["n"], 200))
    results["flags"] = found
    results["flags_not_applicable"] = flags.not_applicable(suite, threat, eps_sweep)
    notes = [] if runner.native else ["external model: attacked through its own backward pass, so the "
                                      "estimator bank does not apply (one member stands for all)"]
    if facts["stochastic"]:
        notes.append(f"stochastic model: gradients averaged over {facts['draws']} draws (EoT) and accuracy "
                     f"averaged over {facts['draws']} draws")
    results["notes"] = notes
    results["seconds"] = round(time.perf_counter() - start, 3)
    return results, rows


def _gradient_check(rows: list[dict], estimators: list[str]) -> dict:
    clean = [r for r in rows if r["clean_correct"] >= BROKEN]
    fraction = {e: sum(e in r["zero_gradient"].split() for r in clean) / max(len(clean), 1) for e in estimators}
    return {"zero_gradient_fraction": fraction,
            "all_zero_samples": sum(bool(estimators) and len(r["zero_gradient"].split()) == len(estimators)
                                    for r in clean)}


def unbounded_check(suite: Suite, threat: ThreatModel) -> dict:
    """What the unbounded check runs, in words (results.json stores it beside its accuracy)."""
    if threat.events:
        steps = max(suite.unbounded_steps, threat.frame_range)
        return {"attack": f"the sparse event attack with no budget ({steps} steps of one event per bin: any "
                          "count in [0, R] reachable in every unsaturated bin)", "steps": steps}
    return {"attack": "PGD with eps = 1 (any input in [0, 1] allowed)", "steps": suite.unbounded_steps}


def unbounded_accuracy(runner: SuiteRunner, dataset, suite: Suite, n: int, device) -> tuple[float | None, int]:
    """Accuracy under PGD with eps = 1 (the whole [0, 1] box), or under events-l0 the sparse event attack
    with no budget: any sound attack reaches 0%."""
    count = min(suite.unbounded_n, n)
    if count == 0:
        return None, 0
    (batch,) = make_batches(dataset, count, count, [0], torch.device(device))
    threat = runner.threat
    events = threat is not None and threat.events
    steps = max(suite.unbounded_steps, threat.frame_range) if events else suite.unbounded_steps
    members = runner.gradient_estimators or ("triangle:1",)
    score = correct_fraction(runner.model, batch.x, batch.y, runner.draws)
    generator = torch.Generator().manual_seed(runner.seed)
    for member in members:
        idx = (score > 0).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        with eval_mode(runner.model), bank.under(runner.model, member, runner.twins) as target:
            if events:
                x_adv = sparse_events(target, batch.x[idx], batch.y[idx], None, threat.frame_range, steps,
                                      runner.draws)
            else:
                x_adv = pgd(target, batch.x[idx], batch.y[idx], 1.0, 2.5 / steps, steps, generator=generator,
                            draws=runner.draws)
        score[idx] = torch.minimum(score[idx], runner.score(x_adv, batch.y[idx]))
    return score.mean().item(), count


def sweep_attack(suite: Suite):
    """The attack an eps sweep uses: the suite's first iterative l-inf one, else its first white-box l-inf
    one, at the sweep's eps (any radius of its own dropped)."""
    specs = [s for s in suite.attacks if s.attack in ITERATIVE and s.norm == "linf"] or \
            [s for s in suite.attacks if s.white_box and s.norm == "linf"]
    if not specs:
        raise UserError("--eps-sweep needs a white-box l-inf attack in the suite")
    return dataclasses.replace(specs[0], eps=None)


def sweep(model, dataset, suite: Suite, eps: float, num_classes: int, facts: dict, seed: int, device,
          progress: bool) -> list[dict]:
    """The suite's first iterative attack at growing eps on up to 200 samples (chance should be reached)."""
    specs = [sweep_attack(suite)]
    single = dataclasses.replace(suite, attacks=(specs[0],))
    base = eps if eps > 0 else 1 / 255
    points = sorted({min(base * f, 1.0) for f in SWEEP_FACTORS} | {0.0, 1.0})
    out = []
    for point in points:
        rows, _ = run_suite(model, dataset, single, point, num_classes=num_classes, n=min(facts["n"], 200),
                            seed=seed, device=device, draws=facts["draws"], progress=progress)
        rows = finish_rows(rows, [specs[0].label])
        out.append({"eps": point, "attack": specs[0].label, "accuracy": sum(r["robust"] for r in rows) / len(rows)})
    return out


def budget_sweep(model, dataset, suite: Suite, threat: ThreatModel, num_classes: int, facts: dict, seed: int,
                 device, progress: bool) -> list[dict]:
    """events-l0: the suite's first sparse-events attack at budgets K/4 .. 8K on up to 200 samples (accuracy
    must not rise with the budget; the unbounded check is the no-budget end)."""
    spec = next(s for s in suite.attacks if s.attack == "sparse-events")
    spec = dataclasses.replace(spec, params={**spec.params, "budget": None})  # each point's budget
    single = dataclasses.replace(suite, attacks=(spec,))
    out = []
    for budget in sorted({max(1, round(threat.budget * f)) for f in BUDGET_FACTORS}):
        point = make_threat_model("events-l0", budget=budget, frame_range=threat.frame_range)
        rows, _ = run_suite(model, dataset, single, 0.0, num_classes=num_classes, n=min(facts["n"], 200),
                            seed=seed, device=device, draws=facts["draws"], progress=progress, threat=point)
        rows = finish_rows(rows, [spec.label])
        out.append({"budget": budget, "attack": spec.label, "accuracy": sum(r["robust"] for r in rows) / len(rows)})
    return out


def write_results(out: Path, results: dict, rows: list[dict]) -> Path:
    """results.json at ``out`` and the per-sample CSV beside it (same stem, .csv)."""
    csv_path = out.with_suffix(".csv")
    write_csv(csv_path, rows)
    write_json(out, {**results, "per_sample": csv_path.name})
    return csv_path
