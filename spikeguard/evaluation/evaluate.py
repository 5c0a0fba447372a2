"""One evaluation end to end: the suite on the chosen samples, the checks that catch a weak evaluation,
and the results record (results.json plus a per-sample CSV beside it).

``run_evaluation(config, target)`` is the one entry point: the command line builds an EvalConfig from its
flags and a Target from a checkpoint or model function; Python code builds them from a model in memory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spikeguard.attacks import pgd
from spikeguard.attacks.ensemble import BROKEN, WorstCase
from spikeguard.attacks.events import sparse_events
from spikeguard.errors import UserError
from spikeguard.evaluation import bank, escalation, flags
from spikeguard.evaluation.batch_store import BatchStore
from spikeguard.evaluation.config import EvalConfig
from spikeguard.evaluation.runner import Plan, SuiteRunner, make_batches, run_suite
from spikeguard.evaluation.stochastic import correct_fraction
from spikeguard.evaluation.suites import Suite, load_suite
from spikeguard.evaluation.summary import attack_labels, finish_rows, summarize, write_csv
from spikeguard.evaluation.targets import Target, load_source
from spikeguard.evaluation.threat_models import ThreatModel, check_suite, event_attacks, make_threat_model
from spikeguard.files import write_json
from spikeguard.progress import reporter_for
from spikeguard.runtime import eval_mode, forked_rng, pick_device

SWEEP_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
BUDGET_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class EvalRecord:
    """What an evaluation found: ``results`` (results.json's content) and one row per sample (the CSV)."""

    results: dict
    rows: list[dict]
    kept: BatchStore | None = None  # finished batches kept for --resume; removed once the results are written

    def write(self, out: str | Path) -> Path:
        """results.json at ``out`` and the per-sample CSV beside it; returns the CSV's path."""
        csv_path = write_results(Path(out), self.results, self.rows)
        if self.kept is not None:
            self.kept.remove()
        return csv_path


def run_evaluation(config: EvalConfig, target: Target, *, batches=None, keep_batches: Path | None = None,
                   resume: bool = False, examples=None) -> EvalRecord:
    """Attack ``target`` as ``config`` says. Inside a torch.distributed process group (torchrun) each rank
    attacks a contiguous block of the batches and the rows are gathered on every rank; batches are seeded
    by their number, so the merged result equals a single-process run. ``batches``: only these batch
    numbers (``--verify``). ``keep_batches``: the results path beside which finished batches are kept as
    they finish (batch_store.py); ``resume`` runs only the batches missing there. ``examples`` (a
    ScoredExamples) receives each sample's counted adversarial example."""
    config = config.for_target(target)
    suite = config.suite if isinstance(config.suite, Suite) else load_suite(config.suite)
    if len(target.test) == 0:
        raise UserError("the evaluation split is empty")
    threat = make_threat_model(config.threat_model, eps=config.eps, budget=config.budget,
                               frame_range=target.frame_range)
    threat.check_sample(target.test[0][0])
    source = config.source
    if isinstance(source, (str, Path)):
        source = load_source(str(source), target)
    check_suite(suite, threat, transfer=source is not None)
    device = pick_device(config.device)
    plan = Plan(target.model, target.test, suite, config.eps, target.num_classes, n=config.n,
                batch_size=config.batch_size, seed=config.seed, device=device, draws=config.eot_draws,
                source=source, threat=threat, progress=reporter_for(config.progress), train=target.train,
                examples=examples)
    store = None
    if keep_batches is not None:
        from spikeguard.distributed import on_main

        identity = {"checkpoint": target.checkpoint, "checkpoint_sha256": target.checkpoint_sha256,
                    "model_fn": target.model_fn, "suite_spec": suite.raw, "eps": config.eps, "n": plan.count,
                    "batch_size": config.batch_size, "seed": config.seed, "eot_draws": config.eot_draws,
                    "threat_model": threat.describe(), "eps_sweep": config.eps_sweep,
                    "source": str(config.source) if config.source is not None else None}
        store = BatchStore(Path(keep_batches), identity)
        on_main(store.prepare, resume)  # rank 0 checks and writes; its refusal reaches every rank
    results, rows = assess(plan, eps_sweep=config.eps_sweep, batches=batches, store=store)
    record = {"model": target.name, "dataset": target.dataset, "checkpoint": target.checkpoint,
              "checkpoint_sha256": target.checkpoint_sha256, "model_fn": target.model_fn,
              "source": str(config.source) if isinstance(config.source, (str, Path)) else None,
              **results, "suite_spec": suite.raw, **provenance(), "device": str(device)}
    from spikeguard.adapters import library_facts

    external = library_facts(target.model)
    if external is not None:  # an external model: its SNN library, version and weights
        record["external_model"] = external
    if target.imported:  # a published checkpoint: where it came from and that its authors chose it on test
        record["imported_checkpoint"] = target.imported
        record.setdefault("notes", []).append(f"imported checkpoint {target.imported['selection']}")
    return EvalRecord(record, rows, store)


def provenance() -> dict:
    from spikeguard.provenance import code_version, library_versions

    return {"code_version": code_version(), "libraries": library_versions()}


def assess(plan: Plan, eps_sweep: bool = False, batches=None,
           store: BatchStore | None = None) -> tuple[dict, list[dict]]:
    """The suite, the checks and the results of one plan: (results without provenance, per-sample rows).
    With ``store``, batches already finished there are taken as stored and each new one is saved."""
    from spikeguard.distributed import context, gather_objects, shard_indices

    suite, threat = plan.suite, plan.threat or make_threat_model("linf", eps=plan.eps)
    needed = max((s.kind.min_classes for s in suite.attacks), default=1)
    if plan.num_classes < needed:
        raise UserError(f"suite '{suite.name}' has targeted attacks, which need at least {needed} classes; the "
                        f"data set has {plan.num_classes}")
    if eps_sweep and not threat.events:  # (events-l0: check_suite made sure a white-box event attack is there)
        sweep_attack(suite)  # refuse a suite it cannot sweep before the long work
    start = time.perf_counter()
    distributed = context().distributed
    if distributed:
        batches = shard_indices(math.ceil(plan.count / plan.batch_size))
    done = store.finished() if store is not None else {}
    wanted = list(range(math.ceil(plan.count / plan.batch_size))) if batches is None else list(batches)
    rows, facts = run_suite(plan, [b for b in wanted if b not in done], on_batch=store.save if store else None)
    for number in (b for b in wanted if b in done):  # finished before a kill: as stored
        rows += done[number]["rows"]
        facts["seconds"] = {k: v + done[number]["seconds"].get(k, 0.0) for k, v in facts["seconds"].items()}
    if distributed:
        parts = gather_objects((rows, facts))
        rows = [row for part_rows, _ in parts for row in part_rows]
        facts = {**facts, "ranks": len(parts),  # seconds summed over ranks: the compute spent, not wall time
                 "seconds": {k: sum(f["seconds"][k] for _, f in parts) for k in facts["seconds"]}}
    labels = attack_labels(suite, rows)
    rows = finish_rows(rows, labels)
    results = {"suite": suite.name, "eps": plan.eps, "threat_model": threat.describe(), "seed": plan.seed,
               "n": len(rows), "batch_size": plan.batch_size, "cascade": suite.cascade,
               "stochastic": facts["stochastic"], "eot_draws": facts["draws"], "ranks": facts.get("ranks", 1),
               **summarize(rows, suite, labels, plan.eps, facts["seconds"], threat)}
    results["gradient_check"] = _gradient_check(rows, facts["gradient_estimators"])
    found = flags.stochastic_flag(facts["stochastic"], facts["draws"])
    found += flags.per_sample_flags(rows, suite, labels, facts["gradient_estimators"])
    # the checks' own attacks (eps sweep, other radii) count towards no example; the escalation's do
    settled = dataclasses.replace(plan, draws=facts["draws"], n=facts["n"], examples=None)
    runner = SuiteRunner(dataclasses.replace(settled, source=None, examples=plan.examples), facts["draws"])
    reporter_for(plan.progress).line(f"unbounded check: {unbounded_check(suite, threat)['attack']}")
    with forked_rng(plan.device, seed=plan.seed):  # a stochastic model's draws: reproducible, caller's RNG untouched
        unbounded, unbounded_n = unbounded_accuracy(settled, runner)
    results["unbounded_accuracy"] = unbounded
    results["unbounded_check"] = unbounded_check(suite, threat)
    found += flags.unbounded_flag(unbounded, unbounded_n, results["unbounded_check"]["attack"])
    if eps_sweep and threat.events:
        results["budget_sweep"] = budget_sweep(settled)
        found += flags.sweep_flags(results["budget_sweep"], plan.num_classes, min(facts["n"], 200), radius="budget")
    elif eps_sweep:
        results["eps_sweep"] = sweep(settled)
        found += flags.sweep_flags(results["eps_sweep"], plan.num_classes, min(facts["n"], 200))
    found += flags.grad_mode_flag(facts["grad_mode_dependent"])
    why = escalation.untrusted(found)
    record = None
    if why and suite.escalation["enabled"] and not threat.events:
        record = escalation.escalate(settled, runner, rows, plan.train, why)
        labels += list(escalation.LABELS)
        rows = finish_rows(rows, labels)
        record["results"] = escalation.attack_entries(rows, record, plan.eps)
        results["escalation"] = record
        results["ensemble_accuracy_before_escalation"] = results["ensemble_accuracy"]
        results["ensemble_accuracy"] = sum(r["robust"] for r in rows) / len(rows)
    results["headline"] = escalation.headline(results, why, record, threat.events)
    results["flags"] = found
    results["flags_not_applicable"] = flags.not_applicable(suite, threat, eps_sweep)
    from spikeguard.snn import spiking_layers

    what = ("ANN (ReLU units in place of spiking neurons, e.g. trained with --network ann)"
            if spiking_layers(plan.model) else "model without spiking layers spikeguard can drive")
    notes = [] if runner.native else [f"{what}: attacked through its own backward pass, so the estimator bank "
                                      "does not apply (one member stands for all)"]
    from spikeguard.adapters import coverage, has_external_neurons

    if has_external_neurons(plan.model):  # per member: whether it drove every SpikingJelly / snnTorch neuron
        results["estimator_bank"] = coverage(plan.model, facts["gradient_estimators"])
        partial = [m for m, c in results["estimator_bank"].items() if not c["applied"]]
        if partial:
            notes.append(f"bank members not applied to every neuron (see estimator_bank): {', '.join(partial)}")
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


def unbounded_accuracy(plan: Plan, runner: SuiteRunner) -> tuple[float | None, int]:
    """Accuracy under PGD with eps = 1 (the whole [0, 1] box), or under events-l0 the sparse event attack
    with no budget, each estimator attacking what the earlier ones left: any sound attack reaches 0%."""
    suite, threat = plan.suite, runner.threat
    count = min(suite.unbounded_n, plan.count)
    if count == 0:
        return None, 0
    (batch,) = make_batches(plan.dataset, count, count, [0], torch.device(plan.device))
    events = threat is not None and threat.events
    steps = max(suite.unbounded_steps, threat.frame_range) if events else suite.unbounded_steps
    worst = WorstCase(correct_fraction(runner.model, batch.x, batch.y, runner.draws))
    generator = torch.Generator().manual_seed(runner.seed)
    for member in runner.gradient_estimators or (runner.own_member(),):
        idx = worst.standing()
        if idx.numel() == 0:
            break
        with eval_mode(runner.model), bank.under(runner.model, member, runner.twins) as target:
            if events:
                x_adv = sparse_events(target, batch.x[idx], batch.y[idx], None, threat.frame_range, steps,
                                      runner.draws)
            else:
                x_adv = pgd(target, batch.x[idx], batch.y[idx], 1.0, 2.5 / steps, steps, generator=generator,
                            draws=runner.draws)
        worst.update(member, idx, runner.score(x_adv, batch.y[idx]))
    return worst.score.mean().item(), count


def sweep_attack(suite: Suite):
    """The attack an eps sweep uses: the suite's first iterative l-inf one, else its first white-box l-inf
    one, at the sweep's eps (any radius of its own dropped)."""
    specs = [s for s in suite.attacks if s.kind.iterative and s.norm == "linf"] or \
            [s for s in suite.attacks if s.white_box and s.norm == "linf"]
    if not specs:
        raise UserError("--eps-sweep needs a white-box l-inf attack in the suite")
    return dataclasses.replace(specs[0], eps=None)


def _accuracy_at(plan: Plan, spec, **changes) -> float:
    """One attack alone on up to 200 samples of the plan, with ``changes`` (eps, threat) applied."""
    single = dataclasses.replace(plan.suite, attacks=(spec,))
    point = dataclasses.replace(plan, suite=single, n=min(plan.count, 200), source=None, **changes)
    rows, _ = run_suite(point)
    rows = finish_rows(rows, [spec.label])
    return sum(r["robust"] for r in rows) / len(rows)


def sweep(plan: Plan) -> list[dict]:
    """The suite's first iterative attack at growing eps on up to 200 samples (chance should be reached)."""
    spec = sweep_attack(plan.suite)
    base = plan.eps if plan.eps > 0 else 1 / 255
    points = sorted({min(base * f, 1.0) for f in SWEEP_FACTORS} | {0.0, 1.0})
    return [{"eps": point, "attack": spec.label, "accuracy": _accuracy_at(plan, spec, eps=point)} for point in points]


def budget_sweep(plan: Plan) -> list[dict]:
    """events-l0: the suite's first white-box event attack at budgets K/4 .. 8K on up to 200 samples
    (accuracy must not rise with the budget; the unbounded check is the no-budget end)."""
    threat = plan.threat
    white = event_attacks(gradient=True)
    spec = next(s for s in plan.suite.attacks if s.attack in white)
    spec = dataclasses.replace(spec, params={**spec.params, "budget": None})  # each point's budget
    out = []
    for budget in sorted({max(1, round(threat.budget * f)) for f in BUDGET_FACTORS}):
        point = make_threat_model("events-l0", budget=budget, frame_range=threat.frame_range)
        out.append({"budget": budget, "attack": spec.label,
                    "accuracy": _accuracy_at(plan, spec, eps=0.0, threat=point)})
    return out


def write_results(out: Path, results: dict, rows: list[dict]) -> Path:
    """results.json at ``out`` and the per-sample CSV beside it (same stem, .csv)."""
    csv_path = out.with_suffix(".csv")
    write_csv(csv_path, rows)
    write_json(out, {**results, "per_sample": csv_path.name})
    return csv_path


def evaluate_model(model: nn.Module, test, num_classes: int, config: EvalConfig | None = None, *,
                   frame_range: int | None = None, **settings) -> EvalRecord:
    """Evaluate a model held in memory on ``test`` (a sequence of (input, label)): ``run_evaluation`` with a
    Target made from the model. ``settings`` are EvalConfig fields (suite, eps, n, ...)."""
    from spikeguard.adapters import preserved_state

    config = dataclasses.replace(config or EvalConfig(), **settings)
    with preserved_state(model):  # SpikingJelly / snnTorch neuron state as found, after every reset
        return run_evaluation(config, Target.of(model, test, num_classes, frame_range=frame_range))
