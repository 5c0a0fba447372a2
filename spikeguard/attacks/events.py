"""Event attacks on event frames [N, T, 2, S, S] (values min(count, R) / R): add or remove whole events.

Written here because no attack library edits discrete events: the l0/sparse attacks there change real
pixel values by arbitrary amounts, while a sensor can only emit an event more or one fewer, i.e. change a
bin's count by an integer, never below zero, and a saturated bin (value 1.0, true count unknown) cannot
be edited at all. Per sample, the number of events changed (sum over bins of |count change|) is <= budget.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spikeguard.attacks.gradient import score_iterate
from spikeguard.errors import UserError

GRID_TOLERANCE = 1e-3  # in events: how far value * R may sit from an integer (float32 rounding)


def event_counts(x: torch.Tensor, frame_range: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts, saturated): integer counts round(x * R) as floats, and the bins at value 1.0. UserError
    when the frames are not multiples of 1/R (a wrong frame range) or leave [0, 1]."""
    scaled = x.detach() * frame_range
    counts = scaled.round()
    if x.numel() and ((scaled - counts).abs().max() > GRID_TOLERANCE or x.min() < 0 or x.max() > 1):
        raise UserError(f"the frames are not event counts / R in [0, 1] with frame range R={frame_range}: "
                        "is the frame range the data set's?")
    return counts, x.detach() >= 1.0


def _frames(x: torch.Tensor, counts: torch.Tensor, delta: torch.Tensor, frame_range: int) -> torch.Tensor:
    """Frames after adding ``delta`` events: untouched bins keep their exact input value."""
    return torch.where(delta == 0, x, (counts + delta) / frame_range).to(x.dtype)


def _edits(grad: torch.Tensor, counts: torch.Tensor, delta: torch.Tensor, locked: torch.Tensor, frame_range: int,
           remaining: torch.Tensor | None, per_step: int) -> torch.Tensor:
    """One greedy step: per sample, the ``per_step`` feasible +1 / -1 event edits of highest first-order
    loss gain (gradient * sign; every edit has the same size 1/R), those with a positive gain only, within
    the remaining budget. Undoing an earlier edit frees budget, so it is always accepted. At most one edit
    per bin (a bin's +1 and -1 gains have opposite signs). Shapes are flat [n, D]; returns the change."""
    d = grad.shape[1]
    now = counts + delta
    plus = torch.where(~locked & (now < frame_range), grad, -math.inf)
    minus = torch.where(~locked & (now > 0), -grad, -math.inf)
    gain, pick = torch.cat([plus, minus], 1).topk(min(per_step, 2 * d), dim=1)
    positive = gain > 0
    sign = torch.where(pick < d, 1.0, -1.0).to(delta.dtype)
    where = pick % d
    undo = positive & (sign * delta.gather(1, where) < 0)
    add = positive & ~undo
    if remaining is None:
        accept = positive
    else:
        allowed = remaining + undo.sum(1)
        accept = undo | (add & (add.cumsum(1) <= allowed[:, None]))
    return torch.zeros_like(delta).scatter_add_(1, where, torch.where(accept, sign, 0.0))


def sparse_events(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: int | None, frame_range: int,
                  steps: int = 20, draws: int = 1) -> torch.Tensor:
    """Greedy gradient-guided event attack: each step takes the input gradient of the cross-entropy (under
    whatever backward estimator ``model`` is set to) and applies up to ceil(budget / steps) of the best
    feasible whole-event edits per sample (see ``_edits``). Every sample returns its first misclassified
    iterate (it stops there) or its iterate of highest loss. ``budget`` None: unlimited (every bin with a
    positive gain moves one event per step). Deterministic: ties are broken by topk's fixed order. With
    ``draws`` > 1 (EoT) gradients and loss are averaged over draws and a sample is broken only when every
    draw misclassifies it."""
    x = x.detach()
    counts, locked = event_counts(x, frame_range)
    if budget == 0 or steps == 0 or x.shape[0] == 0:
        return x.clone()
    n = x.shape[0]
    flat = x.reshape(n, -1)
    counts, locked = counts.reshape(n, -1), locked.reshape(n, -1)
    per_step = flat.shape[1] if budget is None else math.ceil(budget / steps)
    delta = torch.zeros_like(flat)
    best = flat.clone()
    best_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    active = torch.arange(n, device=x.device)
    for step in range(steps + 1):
        current = _frames(flat[active], counts[active], delta[active], frame_range)
        shaped = current.reshape(-1, *x.shape[1:])
        grad, loss, wrong = score_iterate(model, shaped, y[active], draws, gradient=step < steps)
        better = wrong | (loss > best_loss[active])
        best[active[better]] = current[better]
        best_loss[active[better]] = loss[better]
        if step == steps:
            break
        assert grad is not None  # a gradient is asked for on every step but the last
        keep = ~wrong
        active, grad = active[keep], grad[keep].flatten(1)
        if active.numel() == 0:
            break
        remaining = None if budget is None else budget - delta[active].abs().sum(1)
        change = _edits(grad, counts[active], delta[active], locked[active], frame_range, remaining, per_step)
        moved = change.abs().sum(1) > 0  # a sample with no useful edit left has been scored: done
        delta[active] = delta[active] + change
        active = active[moved]
        if active.numel() == 0:
            break
    return best.reshape(x.shape)


def random_events(x: torch.Tensor, budget: int, frame_range: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The random baseline at the same budget: per sample, ``budget`` distinct random unsaturated bins
    each get one event added or removed (sign uniform where both are feasible; only adding into an empty
    bin, only removing from a bin at R). Fewer when fewer bins are editable."""
    x = x.detach()
    counts, locked = event_counts(x, frame_range)
    n = x.shape[0]
    counts, locked = counts.reshape(n, -1), locked.reshape(n, -1)
    can_add, can_remove = ~locked & (counts < frame_range), ~locked & (counts > 0)
    coin = torch.rand(counts.shape, generator=generator, device="cpu").to(x.device) < 0.5
    sign = torch.where(can_add & (~can_remove | coin), 1.0, -1.0).to(x.dtype)
    score = torch.rand(counts.shape, generator=generator, device="cpu").to(x.device)
    score = torch.where(can_add | can_remove, score, -1.0)
    top, pick = score.topk(min(budget, counts.shape[1]), dim=1)
    chosen = torch.zeros_like(counts).scatter_(1, pick, (top >= 0).to(counts.dtype))
    return _frames(x.reshape(n, -1), counts, chosen * sign, frame_range).reshape(x.shape)


def within_event_budget(x_adv: torch.Tensor, x: torch.Tensor, budget: int | None, frame_range: int) -> torch.Tensor:
    """Guard on every example an event attack returns: whole events only, counts in [0, R], saturated bins
    untouched and at most ``budget`` events changed per sample; a violation is a bug in the attack."""
    counts, locked = event_counts(x, frame_range)
    change = (x_adv.detach() - x.detach()) * frame_range
    steps = change.round()
    new = counts + steps
    spent = steps.abs().flatten(1).sum(1)
    bad = ((change - steps).abs().max() > GRID_TOLERANCE if x.numel() else False) or bool((new < 0).any()) \
        or bool((new > frame_range).any()) or bool((steps[locked] != 0).any()) \
        or (budget is not None and bool((spent > budget).any()))
    if bad:
        raise RuntimeError(f"an event attack left the events-l0 budget {budget} (frame range {frame_range}): "
                           "a bug in the attack")
    return _frames(x.reshape(x.shape[0], -1), counts.reshape(x.shape[0], -1), steps.reshape(x.shape[0], -1),
                   frame_range).reshape(x.shape).detach()


# Crafting functions of the attack registry: ``call.budget`` and ``call.frame_range`` come from events-l0.

def craft_sparse_events(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return sparse_events(model, x, y, call.budget, call.frame_range, call.params["steps"], call.draws)


def craft_random_events(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return random_events(x, call.budget, call.frame_range, call.generator)
