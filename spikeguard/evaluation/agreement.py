"""The forward/backward agreement probe: does a step along the model's own gradient move its forward pass
the way that gradient says?

A backward pass can lie on part of the inputs (a sign flipped where the model is confident, a gradient
routed around a hard-label output) while every decision stays the base model's; then every white-box attack
is misled, and nothing in its own numbers says so. The probe asks the forward pass, which is what is scored:
per clean-correct sample, with g the input gradient of the margin loss (best other logit minus the true one)
under a bank member,

    change = mean over k random offsets r of  L(x + r + h sign(g)) - L(x + r),

with h a fraction of eps and r uniform in a smaller box (spikes make L a step function of x: one point would
show no change on an honest SNN; the offsets smooth it). The backward agrees when the change is positive and
larger than that of a random sign step of the same size (on a model that is not robust almost any step raises
the loss, so a flipped gradient would pass a test against zero on many samples). A sample whose gradient is
exactly zero, or whose output neither step moved, says nothing (the zero_gradient flag and the flat-outputs
probe cover those). Each member's fraction is that of the samples it disagrees on among those it spoke on;
members are asked in the suite's order until one disagrees on at most DISAGREEMENT_THRESHOLD (an honest
model's first member, as a rule). When even the best member disagrees on more: the backward_disagrees flag,
which starts the escalation and makes the headline "not a bound". (Counting a sample as agreeing when ANY
member agreed on it let chance accumulate: under the strong suite's 25 members a flipped gradient passed.)

The threshold comes from measurements on honest models (benchmarks/agreement.py, kept in
benchmarks/results/cpu_agreement.json): the six demo defenses and trained SpikingJelly and snnTorch CSNNs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from spikeguard.attacks.gradient import input_gradient, margin_loss
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.schema import Flag, FlagName

PROBE_SAMPLES = 100     # the first samples of the evaluation probed, the clean-correct ones among them
OFFSETS = 4             # random offsets the change is averaged over
STEP = 0.5              # h, as a fraction of eps
OFFSET_RADIUS = 0.25    # the offsets' l-inf radius, as a fraction of eps
MIN_RADIUS = 1 / 255    # eps stands in for this when it is smaller (an eps-0 evaluation still probes)
# Measured (benchmarks/results/cpu_agreement.json, digits, eps 0.15, every clean-correct test sample, the best
# member's fraction): the six demo defenses 0 to 0.6%, a SpikingJelly CSNN 3%, an snnTorch CSNN (spike-count
# outputs) 11.6%; the flipped-gradient trap of tests/traps.py 69%. About twice the worst honest fraction:
DISAGREEMENT_THRESHOLD = 0.25

Under = Callable[[str], contextlib.AbstractContextManager]


@torch.no_grad()
def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """Per-sample margin loss of the draw-averaged logits; the same draws for every call (a seeded fork), so
    a stochastic model's noise cancels between the two points compared."""
    with forked_rng(x.device, seed=seed):
        return margin_loss(sum(model(x) for _ in range(draws)) / draws, y, reduction="none")


def _change(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, step: float,
            offsets: torch.Tensor, start: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """Per sample, the margin's mean change over the offsets when x moves by ``step * direction``
    (``direction`` [N, ...], or [k, N, ...]: one per offset); ``start`` [k, N]: the margins at the offsets."""
    total = torch.zeros(len(x), device=x.device)
    for k, offset in enumerate(offsets):
        moved = ((x + offset).clamp(0, 1) + step * (direction[k] if direction.dim() > x.dim() else direction))
        total += _margins(model, moved.clamp(0, 1), y, draws, seed) - start[k]
    return total / len(offsets)


def probe_agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, members: Sequence[str],
                    under: Under, draws: int = 1, seed: int = 0, samples: int = PROBE_SAMPLES) -> dict:
    """The probe on the clean-correct samples of (x, y): ``members`` in order, ``under(member)`` yielding the
    model whose backward is that member's (its forward is the model's). Returns results.json's
    probes.agreement: the fraction that disagrees, the counts, which member agreed on how many, the settings.
    ``samples``: at most this many clean-correct samples are probed."""
    radius = max(eps, MIN_RADIUS)
    with eval_mode(model):
        with torch.no_grad():
            correct = (sum(model(x) for _ in range(draws)) / draws).argmax(1) == y
        x, y = x[correct][:samples], y[correct][:samples]
        generator = torch.Generator().manual_seed(seed)
        offsets = (2 * torch.rand((OFFSETS, *x.shape), generator=generator) - 1).to(x.device, x.dtype)
        offsets *= OFFSET_RADIUS * radius
        signs = torch.randint(0, 2, offsets.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
        # the control: how much a random sign step of the same size moves the margin (on a model that is not
        # robust, almost any step raises the loss; a gradient that agrees must do better than chance)
        start = torch.stack([_margins(model, (x + offset).clamp(0, 1), y, draws, seed) for offset in offsets])
        chance = _change(model, x, y, signs, STEP * radius, offsets, start, draws, seed)
        members_seen: dict[str, dict] = {}
        for member in members:
            with under(member) as target:
                grad, _ = input_gradient(target, x, y, draws, loss="margin")
            direction = grad.sign()
            nonzero = (direction.flatten(1) != 0).any(1)
            change = _change(model, x, y, direction, STEP * radius, offsets, start, draws, seed)
            # silent samples say nothing either way: a zero gradient (the zero-gradient flag's business), or an
            # output that neither step moved (a flat output at this scale, e.g. spike counts: the flat-outputs
            # probe's business)
            responsive = nonzero & ((change != 0) | (chance != 0))
            disagreeing = int((responsive & ~(change > chance.clamp(min=0))).sum())
            counted = int(responsive.sum())
            members_seen[member] = {"counted": counted, "disagreeing": disagreeing,
                                    "gradient_zero": int((~nonzero).sum()),
                                    "fraction": disagreeing / counted if counted else None}
            if counted and disagreeing / counted <= DISAGREEMENT_THRESHOLD:
                break  # this member's backward can be trusted: the rest need not be asked
    spoke = {m: r for m, r in members_seen.items() if r["fraction"] is not None}
    best = min(spoke, key=lambda m: spoke[m]["fraction"]) if spoke else None
    return {"probed": len(x), "fraction": spoke[best]["fraction"] if best else 0.0, "best_member": best,
            "members": members_seen, "threshold": DISAGREEMENT_THRESHOLD, "offsets": OFFSETS, "step": STEP,
            "offset_radius": OFFSET_RADIUS, "radius_eps": radius}


def agreement_flag(result: dict | None) -> list[Flag]:
    """backward_disagrees when even the member that agrees best disagrees on more than DISAGREEMENT_THRESHOLD
    of the samples its step moved."""
    if not result or result["fraction"] <= DISAGREEMENT_THRESHOLD:
        return []
    best = result["members"][result["best_member"]]
    return [Flag(FlagName.BACKWARD_DISAGREES,
                 f"under every member tried ({len(result['members'])}), a step along the model's own gradient does "
                 f"not move its output the way the gradient says on more than {DISAGREEMENT_THRESHOLD:.0%} of the "
                 f"probed samples (the best, {result['best_member']}, on {best['disagreeing']} of {best['counted']}: "
                 f"{result['fraction']:.0%}): the backward pass lies (a custom backward, a hard-label or rounded "
                 "output); gradient attacks are misled, so the escalation's attacks, which use no gradient of the "
                 "model, decide")]
