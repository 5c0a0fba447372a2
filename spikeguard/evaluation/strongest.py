"""The strongest example per sample: the one that lowers the true-class probability f the most over
every white-box l-inf (attack, estimator) pair of a suite. The analysis measures the adversarial side of
the random-vs-adversarial gap with it (docs/theory.md)."""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.attacks.ensemble import WorstCase
from spikeguard.defenses import true_class_probability
from spikeguard.evaluation import bank
from spikeguard.evaluation.runner import Plan, SuiteRunner, craft, within_budget
from spikeguard.evaluation.suites import Suite, load_suite
from spikeguard.runtime import eval_mode, forked_rng


def strongest_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, suite: str | Suite = "quick",
                       generator: torch.Generator | None = None, num_classes: int | None = None,
                       draws: int = 1) -> torch.Tensor:
    """Per sample, the example of lowest f (docs/method.md's two-class form) over the suite's white-box
    l-inf pairs. ``draws`` > 1 averages gradients and f over draws (a stochastic model). The global RNG is
    left as it was."""
    suite = load_suite(suite) if not isinstance(suite, Suite) else suite
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def mean_f(inputs):
        with eval_mode(model), torch.no_grad():
            return sum(true_class_probability(model(inputs), y) for _ in range(draws)) / draws

    with forked_rng(x.device, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator))):
        with eval_mode(model), torch.no_grad():
            num_classes = num_classes or model(x[:1]).shape[1]
        runner = SuiteRunner(Plan(model, (), suite, eps, num_classes), draws)
        worst = WorstCase(mean_f(x), inputs=x)
        everyone = torch.arange(len(x), device=x.device)
        for spec in suite.attacks:
            if not spec.white_box or spec.norm != "linf":
                continue
            for member in runner.members(spec):
                with eval_mode(model), bank.under(model, member, runner.twins) as target:
                    x_adv = within_budget(craft(spec, target, x, y, eps, draws, generator, num_classes), x, eps,
                                          "linf")
                worst.update(f"{spec.label}/{member}", everyone, mean_f(x_adv), x_adv)
    assert worst.example is not None  # kept: WorstCase was given the inputs
    return worst.example
