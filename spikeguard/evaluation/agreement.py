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
the loss, so a flipped gradient would pass a test against zero on many samples). A sample disagrees when
no member's gradient agrees (members are tried in the suite's order, each on the samples no earlier one
agreed on); a sample whose gradient is exactly zero under every member, or whose output neither step moved,
says nothing (the zero_gradient flag and the flat-outputs probe cover those). Over DISAGREEMENT_THRESHOLD of the probed samples disagreeing: the
backward_disagrees flag, which starts the escalation and makes the headline "not a bound".

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
# Measured (benchmarks/results/cpu_agreement.json, digits, eps 0.15, every clean-correct test sample): the six
# demo defenses 0%, a SpikingJelly CSNN 0.6%, an snnTorch CSNN (spike-count outputs) 4.5%; the flipped-gradient
# trap of tests/traps.py 62%. Twice the worst honest fraction, rounded up.
DISAGREEMENT_THRESHOLD = 0.1

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
        pending = torch.ones(len(x), dtype=torch.bool, device=x.device)   # no member agreed yet
        gradient = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # some member's gradient is not zero
        responded = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # ... and the output moved
        agreed_by: dict[str, int] = {}
        for member in members:
            idx = pending.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            with under(member) as target:
                grad, _ = input_gradient(target, x[idx], y[idx], draws, loss="margin")
            direction = grad.sign()
            nonzero = (direction.flatten(1) != 0).any(1)
            change = _change(model, x[idx], y[idx], direction, STEP * radius, offsets[:, idx], start[:, idx], draws,
                             seed)
            agrees = (change > chance[idx].clamp(min=0)) & nonzero
            gradient[idx[nonzero]] = True
            responded[idx[nonzero & ((change != 0) | (chance[idx] != 0))]] = True
            pending[idx[agrees]] = False
            agreed_by[member] = int(agrees.sum())
    # silent samples say nothing either way: a zero gradient under every member (the zero-gradient flag's
    # business), or an output that neither the gradient step nor the random one moved (a flat output at this
    # scale, e.g. spike counts; the flat-outputs probe's business)
    disagreeing = int((pending & responded).sum())
    counted = len(x) - int((pending & ~responded).sum())
    return {"probed": len(x), "disagreeing": disagreeing, "gradient_zero": int((pending & ~gradient).sum()),
            "unresponsive": int((pending & gradient & ~responded).sum()),
            "fraction": disagreeing / counted if counted else 0.0, "agreed_by": agreed_by,
            "threshold": DISAGREEMENT_THRESHOLD, "offsets": OFFSETS, "step": STEP, "offset_radius": OFFSET_RADIUS,
            "radius_eps": radius}


def agreement_flag(result: dict | None) -> list[Flag]:
    """backward_disagrees when the probe's fraction is over DISAGREEMENT_THRESHOLD."""
    if not result or result["fraction"] <= DISAGREEMENT_THRESHOLD:
        return []
    counted = result["probed"] - result["gradient_zero"] - result["unresponsive"]
    return [Flag(FlagName.BACKWARD_DISAGREES,
                 f"on {result['disagreeing']} of {counted} probed samples ({result['fraction']:.0%}, threshold "
                 f"{DISAGREEMENT_THRESHOLD:.0%}) a step along the model's own gradient, under every member, does "
                 "not move its output the way the gradient says: the backward pass lies (a custom backward, a "
                 "hard-label or rounded output); gradient attacks are misled, so the escalation's attacks, which "
                 "use no gradient of the model, decide")]
