"""The random-vs-adversarial gap: how far f drops under an attack and under random noise of the same size.

drop = f(x) - f(x'), f the two-class true-class probability with its rival re-chosen at x' (so f < 1/2
exactly when x' is misclassified); the full-softmax probability of the true class is a second column, and
the drop of the logit margin m = z_y - z_k (f = sigmoid(m)) a third: a drop of f shrinks with the model's
confidence f (1 - f), a drop of m does not, so only the margin's ratio compares models of unlike confidence.
Definitions and why the ratio is reported twice (signed and absolute) are in docs/theory.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spikeguard.defenses.sparsity import logit_margin
from spikeguard.runtime import eval_mode

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Scores = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # (f, softmax of y, prediction, m)


@torch.no_grad()
def class_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Scores:
    """(f two-class, softmax probability of y, prediction, margin m) per sample, in eval mode."""
    with eval_mode(model):
        logits = model(x)
    softmax = logits.softmax(1).gather(1, y[:, None]).squeeze(1)
    m = logit_margin(logits, y).double()
    return torch.sigmoid(m), softmax.double(), logits.argmax(1), m


def draw_directions(x: torch.Tensor, draws: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(uniform in [-1, 1], random signs), each [draws, *x.shape], drawn on the CPU from ``generator`` so
    results do not depend on the device or the global RNG. Scaled by eps they are the noise at eps; the
    same directions serve every eps (common random numbers: curves in eps are not jittered by redraws)."""
    shape = (draws, *x.shape)
    uniform = 2 * torch.rand(shape, generator=generator) - 1
    signs = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
    return uniform.to(x.device, x.dtype), signs.to(x.device, x.dtype)


def noise_drops(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, directions: torch.Tensor,
                clean: Scores | None = None) -> dict[str, torch.Tensor]:
    """Per-sample drops of f under x + eps * d for each direction d (clipped to [0, 1]): mean, mean of
    the absolute change, worst (largest) drop, mean softmax drop, the margin's mean drop and mean absolute
    change, fraction of draws classified correctly, and whether every draw is classified correctly."""
    f0, p0, _, m0 = clean if clean is not None else class_scores(model, x, y)
    drops, soft, margin, correct = [], [], [], []
    for d in directions:
        f, p, pred, m = class_scores(model, (x + eps * d).clamp(0, 1), y)
        drops.append(f0 - f)
        soft.append(p0 - p)
        margin.append(m0 - m)
        correct.append(pred == y)
    drops_t, margin_t, correct_t = torch.stack(drops), torch.stack(margin), torch.stack(correct)
    return {"mean": drops_t.mean(0), "abs": drops_t.abs().mean(0), "worst": drops_t.amax(0),
            "softmax": torch.stack(soft).mean(0), "margin": margin_t.mean(0), "margin_abs": margin_t.abs().mean(0),
            "accuracy": correct_t.double().mean(0), "all_correct": correct_t.all(0)}


def adversarial_drops(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                      clean: Scores | None = None) -> dict[str, torch.Tensor]:
    """Per-sample drop of f (and of the margin) under ``attack`` (model, x, y) -> x_adv, and the point kept.
    Per sample the lower f of x_adv and x is kept (f = sigmoid(m): also the lower m): x itself lies in the
    ball, so the largest drop over the ball is never negative."""
    f0, p0, pred0, m0 = clean if clean is not None else class_scores(model, x, y)
    with eval_mode(model):
        x_adv = attack(model, x, y).detach()
    f, p, pred, m = class_scores(model, x_adv, y)
    worse = f < f0
    f, p, pred, m = (torch.where(worse, a, b) for a, b in ((f, f0), (p, p0), (pred, pred0), (m, m0)))
    kept = torch.where(worse.view(-1, *([1] * (x.dim() - 1))).to(x.device), x_adv, x)
    return {"f": f, "drop": f0 - f, "softmax": p0 - p, "margin": m0 - m, "correct": pred == y, "x_adv": kept}


def gap_at_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attack: Attack,
               uniform: torch.Tensor, signs: torch.Tensor) -> dict[str, torch.Tensor]:
    """All per-sample gap quantities at one eps (``uniform``/``signs`` from :func:`draw_directions`), and the
    attack's kept points under "x_adv" (not a per-sample number: callers pop it)."""
    clean = class_scores(model, x, y)
    f0, p0, pred0, m0 = clean
    adv = adversarial_drops(model, x, y, attack, clean)
    rand = noise_drops(model, x, y, eps, uniform, clean)
    sign = noise_drops(model, x, y, eps, signs, clean)
    out = {"f_clean": f0, "p_clean": p0, "m_clean": m0, "correct_clean": pred0 == y, "f_adv": adv["f"],
           "drop_adv": adv["drop"], "drop_adv_softmax": adv["softmax"], "drop_adv_margin": adv["margin"],
           "correct_adv": adv["correct"]}
    for name, r in (("rand", rand), ("sign", sign)):
        out |= {f"drop_{name}_mean": r["mean"], f"drop_{name}_abs": r["abs"], f"drop_{name}_worst": r["worst"],
                f"drop_{name}_softmax": r["softmax"], f"drop_{name}_margin_mean": r["margin"],
                f"drop_{name}_margin_abs": r["margin_abs"], f"accuracy_{name}": r["accuracy"],
                f"correct_{name}_all": r["all_correct"]}
    return out | {"x_adv": adv["x_adv"]}


def _ratio(num: float, den: float) -> float | None:
    """num / den, or None where den is not positive (the ratio is undefined, not infinite)."""
    return num / den if den > 0 else None


def summarize_gap(per_sample: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Means over samples and the ratios rho_adv / rho_rand (signed mean drop, the issue's definition)
    and rho_adv / mean |change| (the quantity the first-order bound is about)."""
    m = {k: v.double().mean().item() for k, v in per_sample.items() if k != "x_adv"}
    return {
        "rho_adv": m["drop_adv"], "rho_rand": m["drop_rand_mean"], "ratio": _ratio(m["drop_adv"], m["drop_rand_mean"]),
        "rho_rand_abs": m["drop_rand_abs"], "ratio_abs": _ratio(m["drop_adv"], m["drop_rand_abs"]),
        "rho_rand_worst": m["drop_rand_worst"], "ratio_worst": _ratio(m["drop_adv"], m["drop_rand_worst"]),
        "rho_sign": m["drop_sign_mean"], "rho_sign_abs": m["drop_sign_abs"], "rho_sign_worst": m["drop_sign_worst"],
        "ratio_sign_abs": _ratio(m["drop_adv"], m["drop_sign_abs"]),
        "rho_adv_softmax": m["drop_adv_softmax"], "rho_rand_softmax": m["drop_rand_softmax"],
        "ratio_softmax": _ratio(m["drop_adv_softmax"], m["drop_rand_softmax"]),
        # the same in margin units: free of the confidence factor f (1 - f) that scales every drop of f
        "rho_adv_margin": m["drop_adv_margin"], "rho_rand_margin": m["drop_rand_margin_mean"],
        "rho_rand_margin_abs": m["drop_rand_margin_abs"],
        "ratio_margin": _ratio(m["drop_adv_margin"], m["drop_rand_margin_mean"]),
        "ratio_margin_abs": _ratio(m["drop_adv_margin"], m["drop_rand_margin_abs"]),
        "accuracy_clean": m["correct_clean"], "accuracy_adv": m["correct_adv"],
        "accuracy_rand": m["accuracy_rand"], "accuracy_rand_worst": m["correct_rand_all"],
        "accuracy_sign": m["accuracy_sign"], "accuracy_sign_worst": m["correct_sign_all"],
    }
