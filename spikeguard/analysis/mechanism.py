"""The mechanism SR is said to work by, measured where it can hold and where it can be confounded.

SR penalises ||df/dx||_1 with f = sigmoid(m) the true-class probability and m = z_y - z_k the logit margin
against the strongest rival k. Because f = sigmoid(m), df/dx = f (1 - f) dm/dx exactly: ||df/dx|| can fall
because the margin's gradient shrinks (what the theorem needs) or because the model grows less confident at
the point measured (f (1 - f) moves with f alone). This module measures both factors separately:

- at three points: the clean input, x - (eps/2) sign(df/dx) (halfway towards the attack's first step), and
  the attack's end point;
- under several backward estimators (the model's own, one wide surrogate, the rate estimator), BatchNorm in
  eval mode;
- for f and for m: l1, l2, l1/l2, effective support (l1/l2)^2 and the fraction of exact zeros, with medians
  beside means, and the identity df/dx = f (1 - f) dm/dx checked per sample;
- per sample, the first-order flip distance m / ||dm/dx||_1: the l-inf radius at which the linearised margin
  reaches 0 (docs/theory.md). Its agreement with the attack's outcome at eps is recorded by the analysis.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from spikeguard.adapters import has_external_neurons
from spikeguard.analysis.gradients import gradient_norms
from spikeguard.defenses.sparsity import probability_and_margin_gradients
from spikeguard.runtime import eval_mode
from spikeguard.snn import estimator as use_estimator
from spikeguard.snn import is_spiking
from spikeguard.snn.dead_zone import dead_fractions

# Measured beside the model's own estimator: a surrogate four times the training triangle's width and the
# rate estimator (BPTR), so that a change seen under one backward pass can be told from one of the model.
EXTRA_ESTIMATORS = ("triangle:4", "bptr")
POINTS = ("clean", "half_step", "attack_end")
NORMS = ("l1", "l2", "l1_over_l2", "effective_support", "zero_fraction")
# A sample's identity error is ||df/dx - f (1 - f) dm/dx||_1 relative to the larger of the two norms; float32
# rounding keeps it near 1e-6; above this the recorded gradients are not those of one function.
IDENTITY_TOLERANCE = 1e-3


def decomposition(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample at x: f, m, f (1 - f), the norms of df/dx (``f_*``) and dm/dx (``m_*``), the flip distance
    m / ||dm/dx||_1 (0 for a misclassified sample, inf where the margin is positive and its gradient zero),
    the identity error, and the gradients themselves (``grad_f``; callers drop it)."""
    with eval_mode(model):
        g = probability_and_margin_gradients(model, x, y)
    f, m = g["f"].double(), g["m"].double()
    confidence = f * (1 - f)
    out = {"f": f, "m": m, "f_one_minus_f": confidence}
    for name, grad in (("f", g["grad_f"]), ("m", g["grad_m"])):
        norms = gradient_norms(grad)
        out |= {f"{name}_{k}": norms[k] for k in NORMS}
    scaled = confidence.view(-1, *([1] * (x.dim() - 1))) * g["grad_m"].double()
    error = (g["grad_f"].double() - scaled).flatten(1).abs().sum(1)
    scale = torch.maximum(out["f_l1"], scaled.flatten(1).abs().sum(1)).clamp_min(1e-300)
    out["identity_error"] = torch.where(error > 0, error / scale, torch.zeros_like(error))
    out["flip_distance"] = flip_distance(m, out["m_l1"])
    return out | {"grad_f": g["grad_f"]}


def flip_distance(m: torch.Tensor, grad_m_l1: torch.Tensor) -> torch.Tensor:
    """m / ||dm/dx||_1 per sample: the smallest l-inf step that takes the linearised margin to 0 (its best
    direction is -sign(dm/dx)). 0 where m <= 0 (already misclassified); inf where m > 0 and the gradient is 0."""
    safe = grad_m_l1.clamp_min(1e-300)
    distance = torch.where(grad_m_l1 > 0, m / safe, torch.full_like(m, math.inf))
    return torch.where(m > 0, distance, torch.zeros_like(m))


def half_step(x: torch.Tensor, grad_f: torch.Tensor, eps: float) -> torch.Tensor:
    """x - (eps/2) sign(df/dx), inside [0, 1]: a point on the way the attack's first step goes."""
    return (x - eps / 2 * grad_f.sign()).clamp(0, 1)


def estimator_names(model: nn.Module, training: str) -> list[str]:
    """The model's own estimator first, then EXTRA_ESTIMATORS (without repeats); only the exact gradient for
    a model without spiking layers."""
    if not is_spiking(model):
        return [training]
    return [training] + [e for e in EXTRA_ESTIMATORS if e != training]


def _under(model: nn.Module, name: str, training: str):
    if name == training or not is_spiking(model):
        return contextlib.nullcontext()
    return use_estimator(model, name)


def measure_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float,
                  training: str) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """{estimator: {point: per-sample decomposition}} for one batch; the half-step point is taken along the
    training estimator's df/dx, so every estimator is measured at the same points."""
    out: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    points: dict[str, torch.Tensor] = {"clean": x, "attack_end": x_adv}
    for name in estimator_names(model, training):
        with _under(model, name, training):
            clean = decomposition(model, x, y)
            if "half_step" not in points:  # the first name is the training estimator
                points["half_step"] = half_step(x, clean["grad_f"], eps)
            out[name] = {"clean": clean}
            for point in ("half_step", "attack_end"):
                out[name][point] = decomposition(model, points[point], y)
        for values in out[name].values():
            values.pop("grad_f")
    return out


def surrogate_zeros(model: nn.Module, x: torch.Tensor, training: str) -> dict[str, dict]:
    """Per estimator, each spiking layer's fraction of exactly-zero local derivatives on the batch x (where
    zeros actually occur, beside the input gradient's)."""
    if not is_spiking(model):  # library neurons are listed as unmeasured, with the reason; an ANN has none
        return {training: dead_fractions(model, x)} if has_external_neurons(model) else {}
    out = {}
    for name in estimator_names(model, training):
        with _under(model, name, training):
            out[name] = dead_fractions(model, x)
    return out


def _stats(t: torch.Tensor) -> dict[str, float | None]:
    """Mean and median over the finite values (a flip distance can be inf), and how many were not finite."""
    t = t.double()
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return {"mean": None, "median": None, "not_finite": int(t.numel())}
    return {"mean": finite.mean().item(), "median": finite.quantile(0.5).item(),  # the midpoint median
            "not_finite": int(t.numel() - finite.numel())}


def summarize_point(values: dict[str, torch.Tensor]) -> dict:
    """Means and medians of every per-sample quantity at one point under one estimator, and the identity's
    largest error with how many samples exceed IDENTITY_TOLERANCE."""
    out: dict = {"samples": int(values["f"].numel())}
    for key, t in values.items():
        if key == "identity_error":
            continue
        out[key] = _stats(t)
    error = values["identity_error"]
    out["identity"] = {"max_relative_error": error.max().item() if error.numel() else None,
                       "violations": int((error > IDENTITY_TOLERANCE).sum()), "tolerance": IDENTITY_TOLERANCE}
    return out


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two per-sample series (average ranks for ties; inf ranks last), None
    with fewer than 3 samples or a constant series."""
    if a.numel() < 3:
        return None
    from scipy.stats import rankdata

    ra, rb = (torch.from_numpy(rankdata(t.double().cpu().numpy())) for t in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return (ra @ rb).item() / den if den > 0 else None


def two_step_distance(eps: float, half_step_distance: torch.Tensor) -> torch.Tensor:
    """eps/2 + the flip distance at the half-step point: the margin linearised again halfway, where its
    gradient has grown (an estimate, not a bound; the half step may have been clipped by the [0, 1] box)."""
    return eps / 2 + half_step_distance


def flip_summary(distance: torch.Tensor, half_step_distance: torch.Tensor, min_eps_adv: torch.Tensor,
                 survived: torch.Tensor, correct: torch.Tensor, eps: float) -> dict:
    """On the clean-correct samples: the flip distance's median beside the bisected minimal eps's, their rank
    correlation, and how often "flip distance > eps" agrees with the attack's outcome at eps (survived); the
    same for the two-step distance (``two_step_distance``)."""
    keep = correct.bool().cpu()
    d, e, s = distance.cpu()[keep], min_eps_adv.cpu()[keep], survived.cpu().bool()[keep]
    d2 = two_step_distance(eps, half_step_distance.cpu()[keep])
    predicted, predicted2 = d > eps, d2 > eps
    return {
        "eps": eps, "samples": int(keep.sum()),
        "flip_distance": _stats(d), "min_eps_adv": _stats(e),
        "rank_correlation": rank_agreement(d, e),
        "agreement_with_attack": (predicted == s).double().mean().item() if s.numel() else None,
        "predicted_survivors": int(predicted.sum()), "survivors": int(s.sum()),
        "two_step_distance": _stats(d2), "two_step_rank_correlation": rank_agreement(d2, e),
        "two_step_agreement_with_attack": (predicted2 == s).double().mean().item() if s.numel() else None,
        "two_step_predicted_survivors": int(predicted2.sum()),
        # the bisected minimal eps read the same way: how far the two attack runs agree with each other
        "min_eps_agreement_with_attack": ((e > eps) == s).double().mean().item() if s.numel() else None,
    }


def clean_medians(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100) -> dict[str, float | None]:
    """Medians over the samples x of the clean-point decomposition under the model's current estimator (what
    the demo's diagnosis compares; spikeguard/report/explain.py)."""
    from spikeguard.adapters import stateless

    parts: dict[str, list[torch.Tensor]] = {}
    with stateless(model) as fresh:
        for start in range(0, x.shape[0], batch_size):
            values = decomposition(fresh, x[start:start + batch_size], y[start:start + batch_size])
            for key, t in values.items():
                if key != "grad_f":
                    parts.setdefault(key, []).append(t.cpu())
    keys = ("f", "m", "f_one_minus_f", "f_l1", "m_l1", "m_l1_over_l2", "flip_distance")
    return {key: _stats(torch.cat(parts[key]))["median"] for key in keys}
