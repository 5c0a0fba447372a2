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

from spikeguard.adapters import coverage, has_external_neurons, library_facts, preserved_state
from spikeguard.attacks import pgd
from spikeguard.attacks.ensemble import BROKEN, WorstCase
from spikeguard.attacks.events import sparse_events
from spikeguard.data.class_coverage import missing_classes_note
from spikeguard.distributed import broadcast_object, context, gather_objects, on_main, shard_indices
from spikeguard.errors import UserError
from spikeguard.evaluation import bank, escalation, flags, probes
from spikeguard.evaluation.batch_store import BatchStore
from spikeguard.evaluation.config import EvalConfig
from spikeguard.evaluation.examples import ScoredExamples
from spikeguard.evaluation.runner import Plan, SuiteRunner, make_batches, run_suite
from spikeguard.evaluation.stochastic import correct_fraction
from spikeguard.evaluation.suites import Suite, load_suite
from spikeguard.evaluation.summary import attack_labels, finish_rows, mean, robust_accuracy, summarize
from spikeguard.evaluation.targets import Target, load_source
from spikeguard.evaluation.threat_models import ThreatModel, check_suite, event_attacks, make_threat_model
from spikeguard.files import write_json
from spikeguard.progress import reporter_for
from spikeguard.provenance import code_version, library_versions
from spikeguard.runtime import eval_mode, forked_rng, pick_device
from spikeguard.schema import (
    EvalRecord,
    Flag,
    GradientCheck,
    Probes,
    SampleOutcome,
    UnboundedCheck,
    write_samples,
)
from spikeguard.snn import spiking_layers

SWEEP_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
BUDGET_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Evaluation:
    """What one evaluation found: ``record`` (results.json's content, typed) and one outcome per sample (the
    CSV), with the batches kept for --resume."""

    record: EvalRecord
    samples: list[SampleOutcome]
    kept: BatchStore | None = None  # finished batches kept for --resume; removed once the results are written

    @property
    def results(self) -> dict:
        """results.json's content as the JSON object written."""
        return self.record.to_json()

    @property
    def rows(self) -> list[dict]:
        """The per-sample rows as the CSV's columns."""
        return [s.to_row() for s in self.samples]

    def write(self, out: str | Path) -> Path:
        """results.json at ``out`` and the per-sample CSV beside it; returns the CSV's path."""
        csv_path = write_results(Path(out), self.record, self.samples)
        if self.kept is not None:
            self.kept.remove()
        return csv_path


def run_evaluation(config: EvalConfig, target: Target, *, batches=None, keep_batches: Path | None = None,
                   resume: bool = False, examples: ScoredExamples | None = None) -> Evaluation:
    """Attack ``target`` as ``config`` says. Inside a torch.distributed process group (torchrun) each rank
    attacks a contiguous block of the batches and the rows are gathered on every rank; batches are seeded
    by their number, so the merged result equals a single-process run. ``batches``: only these batch
    numbers (``--verify``). ``keep_batches``: the results path beside which finished batches are kept as
    they finish (batch_store.py); ``resume`` runs only the batches missing there. ``examples`` (a
    ScoredExamples) receives each sample's counted adversarial example."""
    config = config.for_target(target)
    plan = dataclasses.replace(make_plan(config, target), examples=examples)
    store = None
    if keep_batches is not None:
        store = BatchStore(Path(keep_batches), run_identity(config, target, plan))
        on_main(store.prepare, resume)  # rank 0 checks and writes; its refusal reaches every rank
    record, samples = assess(plan, eps_sweep=config.eps_sweep, batches=batches, store=store)
    return Evaluation(described(record, config, target, plan), samples, store)


def make_plan(config: EvalConfig, target: Target) -> Plan:
    """The resolved settings of one evaluation, checked before any attack: suite, threat model, source."""
    suite = config.suite if isinstance(config.suite, Suite) else load_suite(config.suite)
    if len(target.test) == 0:
        raise UserError("the evaluation split is empty")
    eps, name = config.eps, config.threat_model
    assert eps is not None and not isinstance(eps, str) and name is not None  # config.for_target resolved both
    threat = make_threat_model(name, eps=eps, budget=config.budget, frame_range=target.frame_range)
    threat.check_sample(target.test[0][0])
    source = config.source
    if isinstance(source, (str, Path)):
        source = load_source(str(source), target)
    check_suite(suite, threat, transfer=source is not None)
    return Plan(target.model, target.test, suite, eps, target.num_classes, n=config.n,
                batch_size=config.batch_size, seed=config.seed, device=pick_device(config.device),
                draws=config.eot_draws, source=source, threat=threat, progress=reporter_for(config.progress),
                train=target.train, batch_dependent=config.batch_dependent)


def run_identity(config: EvalConfig, target: Target, plan: Plan) -> dict:
    """What defines a run for --resume: kept batches of another run are refused."""
    assert plan.threat is not None  # make_plan sets it
    return {"checkpoint": target.checkpoint, "checkpoint_sha256": target.checkpoint_sha256,
            "model_fn": target.model_fn, "suite_spec": plan.suite.raw, "eps": config.eps, "n": plan.count,
            "batch_size": config.batch_size, "seed": config.seed, "eot_draws": config.eot_draws,
            "threat_model": plan.threat.describe(), "eps_sweep": config.eps_sweep,
            "source": str(config.source) if config.source is not None else None}


def described(record: EvalRecord, config: EvalConfig, target: Target, plan: Plan) -> EvalRecord:
    """``record`` with what was evaluated and where: the model, its checkpoint, the code and libraries."""
    record = dataclasses.replace(
        record, model=target.name, dataset=target.dataset, checkpoint=target.checkpoint,
        checkpoint_sha256=target.checkpoint_sha256, checkpoint_epoch=target.epoch, model_fn=target.model_fn,
        source=str(config.source) if isinstance(config.source, (str, Path)) else None, suite_spec=plan.suite.raw,
        code_version=code_version(), libraries=library_versions(), device=str(plan.device),
        external_model=library_facts(target.model))  # an external model: its SNN library, version and weights
    if (clamped := fewer_samples_note(config.n, len(target.test))) is not None:
        record.notes = [*record.notes, clamped]
    if (narrow := missing_classes_note(config.n, target.test)) is not None:
        record.notes = [*record.notes, narrow]
    if target.imported:  # a published checkpoint: where it came from and that its authors chose it on test
        record.imported_checkpoint = target.imported
        record.notes = [*record.notes, f"imported checkpoint {target.imported['selection']}"]
    return record


def fewer_samples_note(asked: int | None, available: int) -> str | None:
    """The note for an ``n`` above the test split's size (the evaluation then runs the whole split); None
    otherwise."""
    if asked is None or asked <= available:
        return None
    return f"n {asked} asked for more samples than the test split holds ({available}): all {available} were evaluated"


def assess(plan: Plan, eps_sweep: bool = False, batches=None,
           store: BatchStore | None = None) -> tuple[EvalRecord, list[SampleOutcome]]:
    """The suite, the checks and the results of one plan: (the record without what was evaluated, the
    per-sample outcomes). With ``store``, batches already finished there are taken as stored and each new
    one is saved. The steps, in order: attack every batch; summarise; the per-sample flags; the unbounded
    check; the sweeps; the escalation when a flag says the gradient cannot be trusted; the headline; notes."""
    suite, threat = plan.suite, plan.threat or make_threat_model("linf", eps=plan.eps)
    check_before_attacking(plan, threat, eps_sweep)
    start = time.perf_counter()
    rows, facts = attacked_rows(plan, batches, store)
    labels = attack_labels(suite, rows)
    rows = finish_rows(rows, labels)
    record = summary(plan, threat, rows, labels, facts)
    found = flags.stochastic_flag(facts["stochastic"], facts["draws"])
    found += flags.batch_dependent_flag(facts["batch_dependence"], plan.batch_size)
    found += flags.per_sample_flags(rows, suite, labels, facts["gradient_estimators"], facts["saturation"])
    # the checks' own attacks (eps sweep, other radii) count towards no example; the escalation's do
    settled = dataclasses.replace(plan, draws=facts["draws"], n=facts["n"], examples=None)
    runner = SuiteRunner(dataclasses.replace(settled, source=None, examples=plan.examples), facts["draws"])
    found += probes.after_suite(record, settled, runner, threat)
    found += unbounded_step(record, settled, runner, threat)
    found += sweep_step(record, settled, threat, eps_sweep)
    found += flags.grad_mode_flag(facts["grad_mode_dependent"])
    rows = escalation_step(record, settled, runner, rows, labels, found, threat)
    record.flags = found
    record.flags_not_applicable = flags.not_applicable(suite, threat, eps_sweep)
    record.estimator_bank, record.notes = library_notes(plan.model, runner, facts)
    record.seconds = round(time.perf_counter() - start, 3)
    return record, rows


def check_before_attacking(plan: Plan, threat: ThreatModel, eps_sweep: bool) -> None:
    """Refuse what would fail only after the long work: too few classes for a targeted attack, a suite the
    eps sweep cannot use."""
    suite = plan.suite
    needed = max((s.kind.min_classes for s in suite.attacks), default=1)
    if plan.num_classes < needed:
        raise UserError(f"suite '{suite.name}' has targeted attacks, which need at least {needed} classes; the "
                        f"data set has {plan.num_classes}")
    if eps_sweep and not threat.events:  # (events-l0: check_suite made sure a white-box event attack is there)
        sweep_attack(suite)


def attacked_rows(plan: Plan, batches, store: BatchStore | None) -> tuple[list[SampleOutcome], dict]:
    """Every wanted batch attacked (under torchrun: this rank's block, then gathered from every rank), those
    a killed run finished taken from ``store``; and the run facts (seconds summed over ranks and resumes)."""
    total = math.ceil(plan.count / plan.batch_size)
    distributed = context().distributed
    if distributed:
        batches = shard_indices(total)
    done = store.finished() if store is not None else {}
    wanted = list(range(total)) if batches is None else list(batches)
    rows, facts = run_suite(plan, [b for b in wanted if b not in done], on_batch=store.save if store else None)
    for number in (b for b in wanted if b in done):  # finished before a kill: as stored
        rows += done[number]["rows"]
        facts["seconds"] = {k: v + done[number]["seconds"].get(k, 0.0) for k, v in facts["seconds"].items()}
    if distributed:
        parts = gather_objects((rows, facts))
        rows = [row for part_rows, _ in parts for row in part_rows]
        facts = {**facts, "ranks": len(parts),  # seconds summed over ranks: the compute spent, not wall time
                 "seconds": {k: sum(f["seconds"][k] for _, f in parts) for k in facts["seconds"]}}
    return rows, facts


def summary(plan: Plan, threat: ThreatModel, rows: list[SampleOutcome], labels: list[str], facts: dict) -> EvalRecord:
    """The record's numbers before any check: settings, accuracies per attack, the worst case, zero gradients."""
    suite = plan.suite
    return EvalRecord(
        suite=suite.name, eps=plan.eps, threat_model=threat.describe(), seed=plan.seed, n=len(rows),
        batch_size=plan.batch_size, cascade=suite.cascade, stochastic=facts["stochastic"],
        eot_draws=facts["draws"], ranks=facts.get("ranks", 1), clean_accuracy=mean(r.clean_correct for r in rows),
        attacks=summarize(rows, suite, labels, plan.eps, facts["seconds"], threat),
        ensemble_accuracy=robust_accuracy(rows), gradient_check=gradient_check(rows, facts["gradient_estimators"]),
        probes=Probes(batch_dependence=facts["batch_dependence"]))


def unbounded_step(record: EvalRecord, plan: Plan, runner: SuiteRunner, threat: ThreatModel) -> list[Flag]:
    """The unbounded check into ``record``; its flag when the attack does not reach 0%."""
    check = unbounded_check(plan.suite, threat)
    reporter_for(plan.progress).line(f"unbounded check: {check.attack}")
    with forked_rng(plan.device, seed=plan.seed):  # a stochastic model's draws: reproducible, caller's RNG untouched
        accuracy, count = unbounded_accuracy(plan, runner)
    record.unbounded_accuracy, record.unbounded_check = accuracy, check
    return flags.unbounded_flag(accuracy, count, check.attack)


def sweep_step(record: EvalRecord, plan: Plan, threat: ThreatModel, eps_sweep: bool) -> list[Flag]:
    """With --eps-sweep: the eps sweep (the event budget sweep under events-l0) into ``record``; its flags."""
    if not eps_sweep:
        return []
    if threat.events:
        record.budget_sweep = budget_sweep(plan)
        return flags.sweep_flags(record.budget_sweep, plan.num_classes, min(plan.count, 200), radius="budget")
    record.eps_sweep = sweep(plan)
    return flags.sweep_flags(record.eps_sweep, plan.num_classes, min(plan.count, 200))


def escalation_step(record: EvalRecord, plan: Plan, runner: SuiteRunner, rows: list[SampleOutcome],
                    labels: list[str], found: list[Flag], threat: ThreatModel) -> list[SampleOutcome]:
    """When a flag says the gradient cannot be trusted and the suite allows it: the escalation, run once
    (rank 0 under torchrun, its outcome sent to every rank); then the headline. Returns the rows, with the
    escalation's columns when it ran."""
    why = escalation.untrusted(found)
    escalated = None
    if why and plan.suite.escalation["enabled"] and not threat.events:
        def run() -> tuple:
            # a stochastic model's draws there reproducible, the caller's random state untouched
            with forked_rng(plan.device, seed=plan.seed):
                done = escalation.escalate(plan, runner, rows, plan.train, why)
            return done, finish_rows(rows, labels + list(escalation.LABELS))

        escalated, rows = broadcast_object(on_main(run))
        escalated.results = escalation.attack_entries(rows, escalated, plan.eps)
        record.escalation = escalated
        record.ensemble_accuracy_before_escalation = record.ensemble_accuracy
        record.ensemble_accuracy = robust_accuracy(rows)
    record.headline = escalation.headline(robust_accuracy(rows), why, escalated, threat.events)
    return rows


def library_notes(model: nn.Module, runner: SuiteRunner, facts: dict) -> tuple[dict | None, list[str]]:
    """(per bank member, whether it drove every SpikingJelly / snnTorch neuron, or None; the notes on how the
    model was attacked)."""
    what = ("ANN (ReLU units in place of spiking neurons, e.g. trained with --network ann)"
            if spiking_layers(model) else "model without spiking layers spikeguard can drive")
    notes = [] if runner.native else [f"{what}: attacked through its own backward pass, so the estimator bank "
                                      "does not apply (one member stands for all)"]
    bank_coverage = None
    if has_external_neurons(model):
        bank_coverage = coverage(model, facts["gradient_estimators"])
        partial = [m for m, c in bank_coverage.items() if not c["applied"]]
        if partial:
            notes.append(f"bank members not applied to every neuron (see estimator_bank): {', '.join(partial)}")
    if facts["stochastic"]:
        notes.append(f"stochastic model: gradients averaged over {facts['draws']} draws (EoT) and accuracy "
                     f"averaged over {facts['draws']} draws")
    return bank_coverage, notes


def gradient_check(rows: list[SampleOutcome], estimators: list[str]) -> GradientCheck:
    """Per gradient member, the fraction of clean-correct samples whose input gradient is exactly zero."""
    clean = [r for r in rows if r.clean_correct >= BROKEN]
    fraction = {e: sum(e in r.zero_gradient for r in clean) / max(len(clean), 1) for e in estimators}
    return GradientCheck(fraction, sum(bool(estimators) and len(r.zero_gradient) == len(estimators) for r in clean))


def unbounded_check(suite: Suite, threat: ThreatModel | None) -> UnboundedCheck:
    """What the unbounded check runs, in words (results.json stores it beside its accuracy)."""
    if threat is not None and threat.events:
        assert threat.frame_range is not None  # events-l0 runs on event frames
        steps = max(suite.unbounded_steps, threat.frame_range)
        return UnboundedCheck(f"the sparse event attack with no budget ({steps} steps of one event per bin: any "
                              "count in [0, R] reachable in every unsaturated bin)", steps)
    return UnboundedCheck("PGD with eps = 1 (any input in [0, 1] allowed)", suite.unbounded_steps)


def unbounded_accuracy(plan: Plan, runner: SuiteRunner) -> tuple[float | None, int]:
    """Accuracy under PGD with eps = 1 (the whole [0, 1] box), or under events-l0 the sparse event attack
    with no budget, each estimator attacking what the earlier ones left: any sound attack reaches 0%."""
    suite, threat = plan.suite, runner.threat
    count = min(suite.unbounded_n, plan.count)
    if count == 0:
        return None, 0
    (batch,) = make_batches(plan.dataset, count, count, [0], torch.device(plan.device))
    steps = unbounded_check(suite, threat).steps
    worst = WorstCase(correct_fraction(runner.model, batch.x, batch.y, runner.draws))
    generator = torch.Generator().manual_seed(runner.seed)
    for member in runner.gradient_estimators or (runner.own_member(),):
        idx = worst.standing()
        if idx.numel() == 0:
            break
        with eval_mode(runner.model), bank.under(runner.model, member, runner.twins) as target:
            if threat is not None and threat.events:
                assert threat.frame_range is not None  # events-l0 runs on event frames
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
    return robust_accuracy(finish_rows(rows, [spec.label]))


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
    assert threat is not None and threat.budget is not None  # a budget sweep is run under events-l0 only
    white = event_attacks(gradient=True)
    spec = next(s for s in plan.suite.attacks if s.attack in white)
    spec = dataclasses.replace(spec, params={**spec.params, "budget": None})  # each point's budget
    out = []
    for budget in sorted({max(1, round(threat.budget * f)) for f in BUDGET_FACTORS}):
        point = make_threat_model("events-l0", budget=budget, frame_range=threat.frame_range)
        out.append({"budget": budget, "attack": spec.label,
                    "accuracy": _accuracy_at(plan, spec, eps=0.0, threat=point)})
    return out


def write_results(out: Path, record: EvalRecord, samples: list[SampleOutcome]) -> Path:
    """results.json at ``out`` and the per-sample CSV beside it (same stem, .csv)."""
    csv_path = out.with_suffix(".csv")
    write_samples(csv_path, samples)
    write_json(out, dataclasses.replace(record, per_sample=csv_path.name).to_json())
    return csv_path


def evaluate_model(model: nn.Module, test, num_classes: int, config: EvalConfig | None = None, *,
                   frame_range: int | None = None, train=None, **settings) -> Evaluation:
    """Evaluate a model held in memory on ``test`` (a sequence of (input, label)): ``run_evaluation`` with a
    Target made from the model. ``train``: the training split, on which the escalation trains its substitutes.
    ``settings`` are EvalConfig fields (suite, eps, n, ...)."""
    config = dataclasses.replace(config or EvalConfig(), **settings)
    with preserved_state(model):  # SpikingJelly / snnTorch neuron state as found, after every reset
        return run_evaluation(config, Target.of(model, test, num_classes, frame_range=frame_range, train=train))
