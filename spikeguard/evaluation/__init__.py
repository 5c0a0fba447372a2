"""Robustness evaluation: attack suites run as per-sample worst cases over (attack, estimator) pairs,
with EoT for stochastic models, random and black-box baselines, and sanity flags."""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.evaluation.evaluate import check_eps, evaluate, write_results
from spikeguard.evaluation.suites import Suite, load_suite

__all__ = ["Suite", "check_eps", "evaluate", "load_suite", "strongest_examples", "write_results"]


def strongest_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, suite: str | Suite = "quick",
                       generator: torch.Generator | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Per sample, the example that lowers the true-class probability f (METHOD.md's two-class form)
    the most over every white-box l-inf (attack, estimator) pair of ``suite``."""
    from spikeguard.attacks import eval_mode
    from spikeguard.defenses import true_class_probability
    from spikeguard.evaluation import bank
    from spikeguard.evaluation.runner import craft, within_budget

    suite = load_suite(suite) if not isinstance(suite, Suite) else suite
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    num_classes = num_classes or logits.shape[1]
    best, best_f = x.clone(), true_class_probability(logits, y)
    for spec in suite.attacks:
        if not spec.white_box or spec.norm != "linf":
            continue
        for member in spec.estimators:
            with eval_mode(model), bank.under(model, member) as target:
                x_adv = within_budget(craft(spec, target, x, y, eps, 1, generator, num_classes), x, eps, "linf")
            with eval_mode(model), torch.no_grad():
                f = true_class_probability(model(x_adv), y)
            lower = f < best_f
            best[lower], best_f[lower] = x_adv[lower], f[lower]
    return best
