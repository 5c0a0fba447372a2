"""Gradient-sparsity regularisation (SR, Liu et al., ICML 2024), as restated in docs/method.md.

f(x) = sigmoid(z_y - z_k): the probability of the true class y against its strongest rival k (fixed on
the clean pass). The penalty is a finite-difference estimate of the input gradient's l1 norm along its own
sign: ((f(x + h * sign(g)) - f(x)) / h)^2 with g = df/dx, averaged over the batch. sign(g) is a constant;
gradients flow through both f(x) and f(x + h * sign(g)).
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.adapters import stateless
from spikeguard.errors import UserError


def strongest_rival(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """argmax over j != y of the logits (no gradient)."""
    masked = logits.detach().clone()
    masked.scatter_(1, y[:, None], -float("inf"))
    return masked.argmax(1)


def logit_margin(logits: torch.Tensor, y: torch.Tensor, rival: torch.Tensor | None = None) -> torch.Tensor:
    """m = z_y - z_k, one value per sample (k: ``rival``, else the strongest rival)."""
    if rival is None:
        rival = strongest_rival(logits, y)
    return (logits.gather(1, y[:, None]) - logits.gather(1, rival[:, None])).squeeze(1)


def true_class_probability(logits: torch.Tensor, y: torch.Tensor, rival: torch.Tensor | None = None) -> torch.Tensor:
    """f = exp(z_y) / (exp(z_y) + exp(z_k)) = sigmoid(z_y - z_k) = sigmoid(m), one value per sample."""
    return torch.sigmoid(logit_margin(logits, y, rival))


def probability_and_margin_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """f, m, df/dx and dm/dx per sample from one forward pass (no graph kept), with the rival k chosen at x.
    Since f = sigmoid(m), df/dx = f (1 - f) dm/dx exactly: a small ||df/dx|| can come from a flat margin or
    from a confident f (f (1 - f) near 0), and only the margin's gradient tells them apart. The caller sets
    train/eval mode and the backward estimator."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        rival = strongest_rival(logits, y)
        m = logit_margin(logits, y, rival)
        f = torch.sigmoid(m)
        (g_m,) = torch.autograd.grad(m.sum(), x, retain_graph=True)
        (g_f,) = torch.autograd.grad(f.sum(), x)
    return {"f": f.detach(), "m": m.detach(), "grad_f": g_f.detach(), "grad_m": g_m.detach(), "rival": rival}


@torch.no_grad()
def penalty_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float = 0.01) -> dict[str, float]:
    """The SR penalty's value without a gradient to the parameters, for any model (vanilla included), and the
    same finite difference taken on the margin: sr_penalty = mean ((f(x + h sign(df/dx)) - f(x)) / h)^2, an
    estimate of mean ||df/dx||_1^2; margin_penalty = mean ((m(x + h sign(dm/dx)) - m(x)) / h)^2, of
    mean ||dm/dx||_1^2. The rival stays the clean one; the caller sets train/eval mode."""
    with stateless(model) as model:
        clean = probability_and_margin_gradients(model, x, y)
        rival = clean["rival"]
        step_f = model(x.detach() + h * clean["grad_f"].sign())
        step_m = model(x.detach() + h * clean["grad_m"].sign())
        f_step = true_class_probability(step_f, y, rival)
        m_step = logit_margin(step_m, y, rival)
    return {"sr_penalty": ((f_step - clean["f"]) / h).pow(2).mean().item(),
            "margin_penalty": ((m_step - clean["m"]) / h).pow(2).mean().item()}


def sparsity_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the clean pass, SR penalty). The logits keep their graph so a caller can add the
    cross-entropy without a third forward pass."""
    if not h > 0:
        raise UserError(f"h must be positive, got {h}")
    with stateless(model) as model:  # each pass from a clean SpikingJelly / snnTorch state; restored after
        return _sparsity_terms(model, x, y, h)


def _sparsity_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    logits = model(x)
    rival = strongest_rival(logits, y)
    f = true_class_probability(logits, y, rival)
    # retain_graph: the clean graph is reused by the penalty and the cross-entropy.
    (g,) = torch.autograd.grad(f.sum(), x, retain_graph=True)
    x_step = x.detach() + h * g.sign()  # not clamped to [0, 1], as in the release
    f_step = true_class_probability(model(x_step), y, rival)
    penalty = ((f_step - f) / h).pow(2).mean()
    return logits, penalty


def sparsity_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float = 0.01) -> torch.Tensor:
    """The SR penalty as a scalar tensor with gradients to the parameters, for any model mapping images
    to logits. Add ``lamb * sparsity_penalty(model, x, y)`` to your own loss."""
    return sparsity_terms(model, x, y, h)[1]
