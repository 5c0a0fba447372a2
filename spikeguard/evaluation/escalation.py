"""When a flag says the gradient cannot be trusted, the evaluator goes on by itself with attacks that do
not use the target's gradient, and marks its headline "not a bound".

A lying model (a zero or sign-flipped backward, a decoy function whenever the input requires a gradient,
an input quantiser) defeats every white-box attack, so the suite's worst case is no bound on robustness.
Two attacks do not ask the target for a gradient:

1. transfer from a substitute: a model trained on the target's own predictions for the training split (a
   copy of the ANN twin for spikeguard models, else a small CNN for the input's shape), or the --source
   model; PGD and APGD-CE against it, examples scored on the target;
2. PGD on a gradient estimated from the target's outputs (spikeguard/attacks/estimated_gradient.py);
3. Square with restarts and a larger query budget.

Both attack only the samples every earlier attack left standing. The settings come from the suite file's
``escalation:`` block (spikeguard/evaluation/suites.py). docs/evaluation.md ("Escalation") has the rules.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.attacks.ensemble import WorstCase
from spikeguard.evaluation.runner import Plan, SuiteRunner, batch_seed, craft, make_batches, within_budget
from spikeguard.evaluation.suites import AttackSpec
from spikeguard.progress import reporter_for
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.schema import (
    ESCALATION,
    UNTRUSTING,
    AttackResult,
    EscalationAttack,
    EscalationRecord,
    Flag,
    Headline,
    SampleOutcome,
)
from spikeguard.snn import ann_twin, is_spiking

TRANSFER_LABEL = "escalation-transfer"
ESTIMATE_LABEL = "escalation-estimated-gradient"
SQUARE_LABEL = "escalation-square"
LABELS = (TRANSFER_LABEL, ESTIMATE_LABEL, SQUARE_LABEL)
SUBSTITUTE_BATCH = 64
SUBSTITUTE_LR = 3e-3


def untrusted(flags: list[Flag]) -> list[Flag]:
    """The flags after which the gradient cannot be trusted (schema.UNTRUSTING): each starts the escalation."""
    return [f for f in flags if f.name in UNTRUSTING]


class SmallCNN(nn.Module):
    """The substitute for a model spikeguard did not build: two convolutions and two linear layers, for
    any input [N, C, H, W] (event frames [N, T, C, H, W] are read as T*C channels)."""

    def __init__(self, sample_shape: torch.Size, num_classes: int):
        super().__init__()
        channels = int(math.prod(sample_shape[:-2]))
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1, -3))


def build_substitute(model: nn.Module, sample_shape: torch.Size, num_classes: int) -> tuple[nn.Module, str]:
    """(an untrained-for-the-task substitute, its description): the ANN twin of a spikeguard SNN as an
    independent copy (it starts from the target's weights), else a SmallCNN. A network that is its own ANN
    twin (trained with --network ann) gets the SmallCNN: a copy of itself would only repeat the white-box
    attacks."""
    if is_spiking(model):
        return copy.deepcopy(ann_twin(model)), f"ANN twin of the target ({type(model).__name__}, ReLU for spikes)"
    return SmallCNN(sample_shape, num_classes), "SmallCNN (conv 32, conv 64, pool 4x4, linear 128, linear)"


@torch.no_grad()
def target_probabilities(model: nn.Module, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The target's class probabilities (for a stochastic model, of its logits averaged over draws): the
    answers to ``draws`` queries per input. Soft answers teach the substitute the target's margins, not only
    its decisions, which is what makes its adversarial examples transfer."""
    with eval_mode(model):
        return torch.softmax(sum(model(x) for _ in range(draws)) / draws, dim=1)


def train_substitute(plan: Plan, train, draws: int, settings: dict) -> tuple[nn.Module, dict]:
    """A substitute distilled from the target's answers for up to ``substitute_queries`` training inputs."""
    start = time.perf_counter()
    device = torch.device(plan.device)
    count = min(len(train), settings["substitute_queries"])
    (batch,) = make_batches(train, count, count, [0], device)
    answers = torch.cat([target_probabilities(plan.model, batch.x[i:i + 256], draws) for i in range(0, count, 256)])
    substitute, architecture = build_substitute(plan.model, batch.x.shape[1:], plan.num_classes)
    substitute = substitute.to(device)
    optimizer = torch.optim.Adam(substitute.parameters(), lr=SUBSTITUTE_LR)
    order = torch.Generator().manual_seed(batch_seed(plan.seed, 0, 2001))
    with forked_rng(device, seed=batch_seed(plan.seed, 0, 2002)):
        substitute.train()
        for _ in range(settings["substitute_epochs"]):
            for idx in torch.randperm(count, generator=order).split(SUBSTITUTE_BATCH):
                idx = idx.to(device)
                loss = F.cross_entropy(substitute(batch.x[idx]), answers[idx])  # soft targets: distillation
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        substitute.eval()
        with torch.no_grad():
            agreement = (substitute(batch.x).argmax(1) == answers.argmax(1)).float().mean().item()
    return substitute, {"architecture": architecture, "trained_on": "training split, the target's class "
                        "probabilities as soft labels", "queries": count * draws, "inputs": count,
                        "epochs": settings["substitute_epochs"],
                        "agreement_on_its_training_inputs": round(agreement, 4),
                        "seconds": round(time.perf_counter() - start, 3)}


def escalate(plan: Plan, runner: SuiteRunner, rows: list[SampleOutcome], train, why: list[Flag]) -> EscalationRecord:
    """Run the escalation on the samples ``rows`` still count as robust; writes its columns into ``rows``
    and returns what it did (results.json's "escalation", without its accuracies: ``attack_entries``)."""
    settings = plan.suite.escalation
    start = time.perf_counter()
    say = reporter_for(plan.progress).line
    record = EscalationRecord(why=[f.name for f in why], settings=dict(settings))
    order = {row.index: row for row in rows}
    standing = sorted(i for i, row in order.items() if row.worst_case > 0)
    say(f"escalation ({', '.join(record.why)}: the gradient cannot be trusted): attacks that do not use it, "
        f"on the {len(standing)} samples still standing")
    for row in rows:  # samples not attacked keep their score so far
        for label in LABELS:
            row.attack(label).score, row.attack(label).broken_by = row.worst_case, ""
    substitute, record.substitute = _substitute(plan, runner, train, settings)
    if "seconds" in record.substitute:
        say(f"  substitute ({record.substitute['architecture']}) trained in {record.substitute['seconds']:.0f}s, "
            f"agrees with the model on {100 * record.substitute['agreement_on_its_training_inputs']:.1f}% of its "
            "training inputs")
    subset = [plan.dataset[i] for i in standing]
    for number, batch in enumerate(make_batches(subset, len(subset), plan.batch_size, None,
                                                torch.device(plan.device))):
        indices = [standing[i] for i in batch.indices]
        worst = _escalate_batch(plan, runner, substitute, order, indices, batch, number)
        say(f"  escalation batch {number + 1}: {int((worst.score >= 0.5).sum())} of {len(indices)} still standing, "
            f"{time.perf_counter() - start:.0f}s so far")
    steps = settings["transfer_steps"]
    record.attacks = [
        EscalationAttack(TRANSFER_LABEL, f"PGD-{steps} and APGD-CE-{steps} on the substitute, scored on the target",
                         substitute is not None),
        EscalationAttack(ESTIMATE_LABEL, f"PGD-{settings['estimate_steps']} on gradients estimated from outputs "
                                         f"({2 * settings['estimate_directions']} queries a step)", True),
        EscalationAttack(SQUARE_LABEL, f"Square, {settings['square_queries']} queries x "
                                       f"{settings['square_restarts']} restarts, on the survivors", True)]
    record.attacked_samples = len(standing)
    record.seconds = round(time.perf_counter() - start, 3)
    return record


def _substitute(plan: Plan, runner: SuiteRunner, train, settings: dict) -> tuple[nn.Module | None, dict]:
    """The model the transfer attacks run on, and what it is: --source, else one distilled from the target."""
    if plan.source is not None:
        return plan.source, {"architecture": f"the --source model ({type(plan.source).__name__})"}
    if train is not None and len(train):
        return train_substitute(plan, train, runner.draws, settings)
    return None, {"architecture": None, "skipped": "no training split to train a substitute on"}


def _escalate_batch(plan: Plan, runner: SuiteRunner, substitute: nn.Module | None, order: dict[int, SampleOutcome],
                    indices: list[int], batch, number: int) -> WorstCase:
    """The escalation's attacks in turn on one batch of standing samples, each on what the earlier ones left."""
    settings = plan.suite.escalation
    steps = settings["transfer_steps"]
    transfer = [AttackSpec("pgd", "pgd", {"steps": steps, "alpha": None, "restarts": 1, "random_start": True}, ()),
                AttackSpec("apgd-ce", "apgd-ce", {"steps": steps, "restarts": 1}, ())]
    estimate = AttackSpec("nes-pgd", "nes-pgd", {"steps": settings["estimate_steps"],
                                                 "directions": settings["estimate_directions"], "sigma": 0.1}, ())
    square = AttackSpec("square", "square", {"queries": settings["square_queries"],
                                             "restarts": settings["square_restarts"], "p_init": 0.8}, ())
    score = torch.as_tensor([order[i].worst_case for i in indices], device=batch.x.device, dtype=torch.float32)
    worst = WorstCase(score)
    if substitute is not None:
        for slot, spec in enumerate(transfer):
            _attack(spec, substitute, runner, batch, worst, plan, number, 3000 + slot)
        _write(order, indices, worst, TRANSFER_LABEL)
    _attack(estimate, runner.model, runner, batch, worst, plan, number, 3050)
    _write(order, indices, worst, ESTIMATE_LABEL)
    _attack(square, runner.model, runner, batch, worst, plan, number, 3100)
    _write(order, indices, worst, SQUARE_LABEL)
    return worst


def attack_entries(rows: list[SampleOutcome], record: EscalationRecord, eps: float) -> list[AttackResult]:
    """results.json's entries for the escalation's columns (each the worst case so far: cumulative)."""
    out = []
    for label, what in zip(LABELS, record.attacks):
        accuracy = sum(r.score(label) for r in rows) / len(rows) if rows else math.nan
        out.append(AttackResult(label, ESCALATION, "linf", eps,
                                {"what": what.what, "ran": what.ran,
                                 "accuracy_is": "cumulative: robust to this and every earlier attack"},
                                [], accuracy, {}, 0.0))
    return out


def headline(accuracy: float, why: list[Flag], record: EscalationRecord | None, events: bool) -> Headline:
    """The number to quote and whether it is a bound: not when a flag says the gradient cannot be trusted,
    even after the escalation (an attack that does not use the gradient lowers the number; nothing proves
    it low enough)."""
    if not why:
        return Headline(accuracy, True, "bound")
    tried = []
    if record is not None:
        substitute = record.substitute
        if substitute.get("architecture"):
            tried.append(f"transfer from a substitute: {substitute['architecture']}"
                         + (f", {substitute['epochs']} epochs on {substitute['inputs']} training inputs labelled "
                            f"by the target ({substitute['queries']} queries)" if "epochs" in substitute else ""))
        tried += [a.what for a in record.attacks[1:]]
    elif events:
        tried.append("none: the escalation's attacks are l-inf; none exists for events-l0")
    else:
        tried.append("none: the suite's escalation is disabled")
    return Headline(accuracy, False, "not a bound", [f"{f.name}: {f.detail}" for f in why], tried)


def _attack(spec: AttackSpec, model: nn.Module, runner: SuiteRunner, batch, worst: WorstCase, plan: Plan,
            number: int, slot: int) -> None:
    idx = worst.standing()
    if idx.numel() == 0:
        return
    generator = torch.Generator().manual_seed(batch_seed(plan.seed, number, slot))
    x, y = batch.x[idx], batch.y[idx]
    with eval_mode(model):
        x_adv = craft(spec, model, x, y, plan.eps, 1 if model is not runner.model else runner.draws, generator,
                      plan.num_classes, runner.threat)
    worst.update(spec.attack, idx, runner.score(within_budget(x_adv, x, plan.eps, "linf"), y))


def _write(order: dict[int, SampleOutcome], indices, worst: WorstCase, label: str) -> None:
    """The worst case so far (cumulative: this attack and everything before it) into column ``label``."""
    for i, value, by in zip(indices, worst.score.tolist(), worst.by):
        outcome = order[i].attack(label)
        outcome.score, outcome.broken_by = value, by
