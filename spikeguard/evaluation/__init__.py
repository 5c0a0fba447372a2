"""Robustness evaluation: attack suites run as per-sample worst cases over (attack, estimator) pairs,
with EoT for stochastic models, random and black-box baselines, and sanity flags."""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.evaluation.evaluate import check_eps, evaluate, write_results
from spikeguard.evaluation.suites import Suite, load_suite

__all__ = ["Suite", "check_eps", "evaluate", "load_suite", "strongest_examples", "write_results"]


def strongest_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, suite: str | Suite = "quick",
                       generator: torch.Generator | None = None, num_classes: int | None = None,
                       draws: int = 1) -> torch.Tensor:
    """Per sample, the example that lowers the true-class probability f (METHOD.md's two-class form)
    the most over every white-box l-inf (attack, estimator) pair of ``suite``. ``draws`` > 1 averages
    gradients and f over draws (a stochastic model). The global RNG is left as it was."""
    from spikeguard.runtime import eval_mode, forked_rng
    from spikeguard.defenses import true_class_probability
    from spikeguard.evaluation import bank
    from spikeguard.evaluation.runner import SuiteRunner, craft, within_budget

    suite = load_suite(suite) if not isinstance(suite, Suite) else suite
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def mean_f(inputs):
        with eval_mode(model), torch.no_grad():
            return sum(true_class_probability(model(inputs), y) for _ in range(draws)) / draws

    with forked_rng(x.device, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator))):
        with eval_mode(model), torch.no_grad():
            num_classes = num_classes or model(x[:1]).shape[1]
        runner = SuiteRunner(model, suite, eps, num_classes, 0, draws)
        best, best_f = x.clone(), mean_f(x)
        for spec in suite.attacks:
            if not spec.white_box or spec.norm != "linf":
                continue
            for member in runner.members(spec):
                with eval_mode(model), bank.under(model, member, runner.twins) as target:
                    x_adv = within_budget(craft(spec, target, x, y, eps, draws, generator, num_classes), x, eps,
                                          "linf")
                f = mean_f(x_adv)
                lower = f < best_f
                best[lower], best_f[lower] = x_adv[lower], f[lower]
    return best
