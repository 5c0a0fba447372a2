"""When a flag says the gradient cannot be trusted, the evaluator goes on by itself with attacks that do
not use the target's gradient, and marks its headline "not a bound".

A lying model (a zero or sign-flipped backward, a decoy function whenever the input requires a gradient,
an input quantiser, a hard-label output) defeats every white-box attack, so the suite's worst case is no
bound on robustness. Four attacks do not ask the target for a gradient:

1. transfer from independent substitutes, which never run the target's own code (a copy of the target, such
   as its ANN twin, would inherit a wrapper's flipped gradient, rounding or output scale): a fresh SmallCNN
   distilled from the target's answers on the training split, and one trained plainly on the training
   labels (or the --source model); PGD and APGD-CE against each, examples scored on the target;
2. PGD on a gradient estimated from the target's outputs (spikeguard/attacks/estimated_gradient.py);
3. Square with restarts and a larger query budget;
4. a decision-based attack, which reads only the target's decisions (a flat, hard-label or saturated
   output gives scores nothing to climb).

Each attacks only the samples every earlier attack left standing. The settings come from the suite file's
``escalation:`` block (spikeguard/evaluation/suites.py). docs/evaluation.md ("Escalation") has the rules.
"""

from __future__ import annotations

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

TRANSFER_LABEL = "escalation-transfer"
ESTIMATE_LABEL = "escalation-estimated-gradient"
SQUARE_LABEL = "escalation-square"
DECISION_LABEL = "escalation-decision"
LABELS = (TRANSFER_LABEL, ESTIMATE_LABEL, SQUARE_LABEL, DECISION_LABEL)
DECISION_ATTACK = "rays"  # the decision-based attack kind (spikeguard/attacks/decision.py)
# the independent substitutes, in the order they attack: what each learns from
SUBSTITUTES = {"distilled": "the target's class probabilities for training inputs (soft labels)",
               "labels": "the training split's labels (no query to the target)"}
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


def build_substitute(sample_shape: torch.Size, num_classes: int) -> tuple[nn.Module, str]:
    """(a fresh substitute, its description): a SmallCNN for any target, so that the transfer source never
    runs the target's code (a copy of the target would inherit whatever its wrapper does to the gradient)."""
    return SmallCNN(sample_shape, num_classes), "SmallCNN (conv 32, conv 64, pool 4x4, linear 128, linear)"


@torch.no_grad()
def target_probabilities(model: nn.Module, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The target's class probabilities (for a stochastic model, of its logits averaged over draws): the
    answers to ``draws`` queries per input. Soft answers teach the substitute the target's margins, not only
    its decisions, which is what makes its adversarial examples transfer."""
    with eval_mode(model):
        return torch.softmax(sum(model(x) for _ in range(draws)) / draws, dim=1)


def train_substitute(plan: Plan, train, draws: int, settings: dict, kind: str = "distilled") -> tuple[nn.Module, dict]:
    """A fresh substitute trained on up to ``substitute_queries`` training inputs: ``kind`` "distilled" on the
    target's answers to them, "labels" on their own labels (it never queries the target)."""
    start = time.perf_counter()
    device = torch.device(plan.device)
    count = min(len(train), settings["substitute_queries"])
    (batch,) = make_batches(train, count, count, [0], device)
    slot = 2000 + 10 * list(SUBSTITUTES).index(kind)
    if kind == "distilled":
        answers = torch.cat([target_probabilities(plan.model, batch.x[i:i + 256], draws) for i in range(0, count, 256)])
    else:
        answers = F.one_hot(batch.y, plan.num_classes).to(batch.x.dtype)
    # its initial weights from the evaluation's seed, not from whatever the caller's global RNG holds
    with forked_rng(device, seed=batch_seed(plan.seed, 0, slot)):
        substitute, architecture = build_substitute(batch.x.shape[1:], plan.num_classes)
    substitute = substitute.to(device)
    optimizer = torch.optim.Adam(substitute.parameters(), lr=SUBSTITUTE_LR)
    order = torch.Generator().manual_seed(batch_seed(plan.seed, 0, slot + 1))
    with forked_rng(device, seed=batch_seed(plan.seed, 0, slot + 2)):
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
            taught = answers.argmax(1)
            agreement = (substitute(batch.x).argmax(1) == taught).float().mean().item()
    return substitute, {"architecture": architecture, "trained_on": SUBSTITUTES[kind],
                        "queries": count * draws if kind == "distilled" else 0, "inputs": count,
                        "epochs": settings["substitute_epochs"],
                        "agreement_on_its_training_inputs": round(agreement, 4),
                        "seconds": round(time.perf_counter() - start, 3), "broke": 0}


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
    substitutes, record.substitute = _substitutes(plan, runner, train, settings)
    for name, facts in record.substitute.items():
        if "seconds" in facts:
            say(f"  substitute '{name}' ({facts['architecture']}, trained on {facts['trained_on']}) in "
                f"{facts['seconds']:.0f}s; agrees with its labels on {100 * facts['agreement_on_its_training_inputs']:.1f}%"
                " of its training inputs")
    subset = [plan.dataset[i] for i in standing]
    for number, batch in enumerate(make_batches(subset, len(subset), plan.batch_size, None,
                                                torch.device(plan.device))):
        indices = [standing[i] for i in batch.indices]
        worst = _escalate_batch(plan, runner, substitutes, order, indices, batch, number)
        say(f"  escalation batch {number + 1}: {int((worst.score >= 0.5).sum())} of {len(indices)} still standing, "
            f"{time.perf_counter() - start:.0f}s so far")
    for name, facts in record.substitute.items():  # which substitute broke what
        facts["broke"] = sum(order[i].attack(TRANSFER_LABEL).broken_by.endswith(f" from {name}") for i in standing)
    record.attacks = _described(settings, bool(substitutes))
    record.attacked_samples = len(standing)
    record.seconds = round(time.perf_counter() - start, 3)
    return record


def _described(settings: dict, transfer_ran: bool) -> list[EscalationAttack]:
    steps = settings["transfer_steps"]
    return [
        EscalationAttack(TRANSFER_LABEL, f"PGD-{steps} and APGD-CE-{steps} on each independent substitute, scored "
                                         "on the target", transfer_ran),
        EscalationAttack(ESTIMATE_LABEL, f"PGD-{settings['estimate_steps']} on gradients estimated from outputs "
                                         f"({2 * settings['estimate_directions']} queries a step)", True),
        EscalationAttack(SQUARE_LABEL, f"Square, {settings['square_queries']} queries x "
                                       f"{settings['square_restarts']} restarts, on the survivors", True),
        EscalationAttack(DECISION_LABEL, f"{DECISION_ATTACK} (decision-based, l-inf), {settings['decision_queries']} "
                                         "queries, on the survivors", settings["decision_queries"] > 0)]


def _substitutes(plan: Plan, runner: SuiteRunner, train, settings: dict) -> tuple[dict[str, nn.Module], dict]:
    """The models the transfer attacks run on, and what each is: the --source model, else the independent
    substitutes of SUBSTITUTES trained on the training split (none without one)."""
    if plan.source is not None:
        return {"source": plan.source}, {"source": {"architecture": f"the --source model "
                                                                    f"({type(plan.source).__name__})", "broke": 0}}
    if train is None or not len(train):
        return {}, {"skipped": {"architecture": None, "why": "no training split to train a substitute on"}}
    models, facts = {}, {}
    for kind in SUBSTITUTES:
        models[kind], facts[kind] = train_substitute(plan, train, runner.draws, settings, kind)
    return models, facts


def _escalate_batch(plan: Plan, runner: SuiteRunner, substitutes: dict[str, nn.Module],
                    order: dict[int, SampleOutcome], indices: list[int], batch, number: int) -> WorstCase:
    """The escalation's attacks in turn on one batch of standing samples, each on what the earlier ones left."""
    settings = plan.suite.escalation
    steps = settings["transfer_steps"]
    transfer = [AttackSpec("pgd", "pgd", {"steps": steps, "alpha": None, "restarts": 1, "random_start": True}, ()),
                AttackSpec("apgd-ce", "apgd-ce", {"steps": steps, "restarts": 1}, ())]
    estimate = AttackSpec("nes-pgd", "nes-pgd", {"steps": settings["estimate_steps"],
                                                 "directions": settings["estimate_directions"],
                                                 "sigma": settings["estimate_sigma"]}, ())
    square = AttackSpec("square", "square", {"queries": settings["square_queries"],
                                             "restarts": settings["square_restarts"], "p_init": 0.8}, ())
    decision = AttackSpec(DECISION_ATTACK, DECISION_ATTACK, {"queries": settings["decision_queries"]}, ())
    score = torch.as_tensor([order[i].worst_case for i in indices], device=batch.x.device, dtype=torch.float32)
    worst = WorstCase(score)
    for position, (name, substitute) in enumerate(substitutes.items()):
        for slot, spec in enumerate(transfer):
            _attack(spec, substitute, runner, batch, worst, plan, number, 3000 + 10 * position + slot, indices,
                    by=f"{spec.attack} from {name}")
    _write(order, indices, worst, TRANSFER_LABEL)
    _attack(estimate, runner.model, runner, batch, worst, plan, number, 3050, indices)
    _write(order, indices, worst, ESTIMATE_LABEL)
    _attack(square, runner.model, runner, batch, worst, plan, number, 3100, indices)
    _write(order, indices, worst, SQUARE_LABEL)
    if settings["decision_queries"] > 0:
        _attack(decision, runner.model, runner, batch, worst, plan, number, 3150, indices)
    _write(order, indices, worst, DECISION_LABEL)
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
        for name, facts in record.substitute.items():
            if facts.get("architecture"):
                tried.append(f"transfer from substitute '{name}': {facts['architecture']}"
                             + (f", {facts['epochs']} epochs on {facts['inputs']} inputs labelled by "
                                f"{facts['trained_on']} ({facts['queries']} queries)" if "epochs" in facts else "")
                             + f"; broke {facts.get('broke', 0)}")
        tried += [a.what for a in record.attacks[1:] if a.ran]
    elif events:
        tried.append("none: the escalation's attacks are l-inf; none exists for events-l0")
    else:
        tried.append("none: the suite's escalation is disabled")
    return Headline(accuracy, False, "not a bound", [f"{f.name}: {f.detail}" for f in why], tried)


def _attack(spec: AttackSpec, model: nn.Module, runner: SuiteRunner, batch, worst: WorstCase, plan: Plan,
            number: int, slot: int, keys: list[int], by: str | None = None) -> None:
    idx = worst.standing()
    if idx.numel() == 0:
        return
    generator = torch.Generator().manual_seed(batch_seed(plan.seed, number, slot))
    x, y = batch.x[idx], batch.y[idx]
    with eval_mode(model):
        x_adv = craft(spec, model, x, y, plan.eps, 1 if model is not runner.model else runner.draws, generator,
                      plan.num_classes, runner.threat)
    scored = runner.score(within_budget(x_adv, x, plan.eps, "linf"), y, [keys[i] for i in idx.tolist()])
    worst.update(by or spec.attack, idx, scored)


def _write(order: dict[int, SampleOutcome], indices, worst: WorstCase, label: str) -> None:
    """The worst case so far (cumulative: this attack and everything before it) into column ``label``."""
    for i, value, by in zip(indices, worst.score.tolist(), worst.by):
        outcome = order[i].attack(label)
        outcome.score, outcome.broken_by = value, by
