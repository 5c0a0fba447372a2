"""What a model does across calls, probed before any attack, and scoring averaged over draws.

Each probe is a small function on a probe batch; docs/evaluation.md ("Probes") says what each one means.

* State that carries between calls: the same input under the same seed gives another output after other
  inputs went through the model. Its numbers would depend on the order of the calls, so the model is
  refused in one line (a neuron state that is not reset, or a random generator of the model's own that
  spikeguard cannot seed).
* Randomness: calls on the same input differ, probed over several calls, without and with autograd (a
  model may draw only on some calls, or only when gradients are on). A stochastic model is attacked with
  EoT (gradients averaged over draws) and scored by its accuracy averaged over the same number of draws:
  attacking one draw and scoring another overstates robustness, and so does scoring one draw.
* Grad-mode dependence: the output differs when the input requires a gradient (under the same seed). The
  gradient then belongs to another function than the one that is scored: a flag that the gradient cannot
  be trusted.
* Non-finite outputs: NaN or inf logits cannot be scored; a one-line error, never a silent accuracy.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.runtime import eval_mode, forked_rng

RANDOM_PROBE_CALLS = 6     # calls compared for randomness (half of them with autograd on)
GRAD_MODE_TOLERANCE = 1e-4  # relative change of the logits that counts as a different function


def finite_logits(logits: torch.Tensor, what: str) -> torch.Tensor:
    """``logits`` unchanged, or a one-line UserError when any is NaN or inf (an argmax over NaN would score
    a sample as right or wrong by accident)."""
    bad = ~torch.isfinite(logits).all(dim=-1)
    if bool(bad.any()):
        first = int(bad.reshape(-1).nonzero()[0])
        raise UserError(f"the model returns NaN or inf logits for {int(bad.sum())} of {bad.numel()} inputs "
                        f"({what}, e.g. input {first} of its batch): such outputs cannot be scored; check the "
                        "model and its expected input range ([0, 1])")
    return logits


def _call(model: nn.Module, x: torch.Tensor, seed: int | None, grad: bool) -> torch.Tensor:
    """One forward pass, with autograd on and an input that requires a gradient when ``grad``; under
    ``seed`` in a forked generator, or (None) drawing on from the global one."""
    with forked_rng(x.device, seed=seed) if seed is not None else contextlib.nullcontext():
        if grad:
            with torch.enable_grad():
                return model(x.detach().clone().requires_grad_(True)).detach()
        with torch.no_grad():
            return model(x)


def _differ(a: torch.Tensor, b: torch.Tensor, tolerance: float = 0.0) -> bool:
    if a.shape != b.shape:
        return True
    if not torch.equal(a.argmax(-1), b.argmax(-1)):
        return True
    scale = a.abs().max().clamp(min=1e-12)
    return bool(((a - b).abs().max() / scale) > tolerance)


def check_state_carry(model: nn.Module, x: torch.Tensor, seed: int) -> None:
    """Refuse (one line) a model whose output on x, under the same seed, changes after other inputs."""
    other = torch.flip(x, dims=[0]) if len(x) > 1 else 1 - x
    with eval_mode(model):
        first = finite_logits(_call(model, x, seed, grad=False), "clean inputs")
        _call(model, other, seed, grad=False)
        _call(model, other * 0.5, seed + 1, grad=False)
        again = _call(model, x, seed, grad=False)
    if _differ(first, again):
        raise UserError("the model's output on the same input under the same seed changes after other inputs "
                        "went through it: state carries over between calls (a neuron state that is not reset "
                        "before each forward pass, or a random generator of its own), so every number would "
                        "depend on the order of the calls; reset the state at the start of forward")


@torch.no_grad()
def is_stochastic(model: nn.Module, x: torch.Tensor, calls: int = RANDOM_PROBE_CALLS) -> bool:
    """True when calls on the same input differ: ``calls`` unseeded calls, the second half with autograd
    on (the global generator runs on between them). Calls are compared within one mode: a difference
    between the modes is grad-mode dependence, not randomness."""
    with eval_mode(model):
        plain = [_call(model, x, None, grad=False) for _ in range(calls - calls // 2)]
        traced = [_call(model, x, None, grad=True) for _ in range(calls // 2)]
    return any(_differ(group[0], out) for group in (plain, traced) for out in group[1:])


def grad_mode_dependent(model: nn.Module, x: torch.Tensor, seed: int) -> bool:
    """True when, under the same seed, the output with an input that requires a gradient differs from the
    output without (prediction or more than GRAD_MODE_TOLERANCE relative)."""
    with eval_mode(model):
        plain = _call(model, x, seed, grad=False)
        traced = _call(model, x, seed, grad=True)
    return _differ(plain, traced, GRAD_MODE_TOLERANCE)


@torch.no_grad()
def correct_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> torch.Tensor:
    """Per sample, the fraction of ``draws`` forward passes that classify it correctly (0 or 1 when the
    model is deterministic and draws = 1). NaN or inf logits are a one-line UserError."""
    with eval_mode(model):
        hits = torch.stack([(finite_logits(model(x), "scored inputs").argmax(1) == y).float()
                            for _ in range(draws)]).sum(0)
    return hits / draws
