"""The Python API in the conventions users know from RobustBench and AutoAttack:

    result = spikeguard.evaluate(model, (x, y), suite="quick", eps=8/255, n=1000)
    model = spikeguard.load("runs/c10_sr")

``evaluate`` takes any ``nn.Module`` mapping images in [0, 1] to logits (spikeguard, SpikingJelly or
snnTorch; library neuron state is reset before every forward pass) and data as a tensor pair, a DataLoader
or a data set's name; it runs exactly what ``spikeguard evaluate`` runs (``run_evaluation``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.schema import SampleOutcome, read_results


@dataclass
class Result:
    """What ``spikeguard.evaluate`` found. Accuracies are fractions in [0, 1]."""

    clean_accuracy: float
    robust_accuracy: float                      # per-sample worst case over every (attack, estimator) pair
    accuracies: dict[str, float]                # per attack
    flags: list                                 # the sanity flags raised (empty: none)
    per_sample: list[dict]                      # one row per sample: clean_correct, robust, broken_by, ...
    results: dict                               # results.json's content
    adversarial: torch.Tensor | None = field(default=None, repr=False)

    def save(self, path: str | Path) -> Path:
        """results.json at ``path`` and the per-sample CSV beside it; returns the CSV's path."""
        from spikeguard.evaluation.evaluate import write_results

        samples = [SampleOutcome.from_row(row) for row in self.per_sample]
        return write_results(Path(path), read_results(self.results), samples)

    def __repr__(self) -> str:
        return (f"Result(clean={self.clean_accuracy:.4f}, robust={self.robust_accuracy:.4f}, "
                f"n={len(self.per_sample)}, flags={len(self.flags)})")


def _as_pairs(data, data_dir, download) -> tuple[Any, int | None, str]:
    """(a sequence of (image, label), the number of classes when known, the data set's name)."""
    if isinstance(data, str):
        from spikeguard.data import load_dataset

        splits = load_dataset(data, data_dir, download, augment=False)
        return splits.test, splits.num_classes, data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise UserError(f"images and labels differ in length ({len(x)} vs {len(y)})")
        return list(zip(x, y.long())), None, "custom"
    if isinstance(data, torch.utils.data.DataLoader) or hasattr(data, "__iter__"):
        pairs = [(xi, yi) for xb, yb in data for xi, yi in zip(xb, yb)]
        return pairs, None, "custom"
    raise UserError("data must be a tensor pair (images, labels), a DataLoader or a data set's name")


def evaluate(model: nn.Module, data, suite: str = "quick", eps: float | str | None = None, n: int | None = None,
             return_adversarial: bool = False, *, num_classes: int | None = None, batch_size: int = 256,
             seed: int = 0, device: str = "cpu", data_dir: str | None = None, download: bool = False,
             progress: bool = False) -> Result:
    """Attack ``model`` on ``data`` with ``suite`` at radius ``eps``; the first ``n`` samples (all: None).
    ``return_adversarial``: also one example per sample (see ``worst_examples``)."""
    pairs, known_classes, name = _as_pairs(data, data_dir, download)
    if not pairs:
        raise UserError("the data hold no samples")
    from spikeguard.adapters import preserved_state

    modes = [(m, m.training) for m in model.modules()]
    try:
        with preserved_state(model):  # SpikingJelly / snnTorch state: reset before every pass, as found after
            return _evaluate(model, pairs, known_classes, name, suite, eps, n, return_adversarial, num_classes,
                             batch_size, seed, device, progress)
    finally:
        for module, training in modes:  # train/eval mode as found
            module.training = training


def _evaluate(model, pairs, known_classes, name, suite, eps, n, return_adversarial, num_classes, batch_size, seed,
              device, progress) -> Result:
    from spikeguard.evaluation import EvalConfig, Target, run_evaluation
    from spikeguard.external import wrap_external

    model = wrap_external(model).eval()
    if num_classes is None:
        num_classes = known_classes
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(pairs[0][0][None].to(device)).shape[1])
    config = EvalConfig(suite=suite, eps=eps, n=n, batch_size=batch_size, seed=seed, device=device,
                        progress=progress)
    evaluation = run_evaluation(config, dataclasses.replace(Target.of(model, pairs, num_classes), dataset=name))
    record = evaluation.record
    adversarial = None
    if return_adversarial:
        count = len(evaluation.samples)
        x = torch.stack([pairs[i][0] for i in range(count)]).to(device)
        y = torch.as_tensor([int(pairs[i][1]) for i in range(count)], device=device)
        adversarial = worst_examples(model, x, y, float(record.eps), suite, num_classes, seed)
    accuracies = {a.name: a.accuracy for a in record.attacks}
    return Result(record.clean_accuracy, record.ensemble_accuracy, accuracies, [f.to_json() for f in record.flags],
                  evaluation.rows, evaluation.results, adversarial)


def load(path: str | Path) -> nn.Module:
    """The model of a run directory or a checkpoint (images in [0, 1] -> logits), in eval mode."""
    from spikeguard.checkpoint import load_model

    model, _ = load_model(path)
    return model.eval()


def worst_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, suite, num_classes: int,
                   seed: int = 0) -> torch.Tensor:
    """Per sample, the first example that broke it in the suite's cascade order (attacks in order, each
    attack's estimators in order), else the lowest-margin example found (margin: the true-class
    probability against the strongest rival). A replay of the suite's l-inf attacks with its own random
    stream, so it finds what the evaluation found up to the randomness of random starts and queries."""
    import contextlib

    from spikeguard.defenses import true_class_probability
    from spikeguard.evaluation import bank
    from spikeguard.evaluation.runner import Plan, SuiteRunner, craft, within_budget
    from spikeguard.evaluation.suites import Suite, load_suite
    from spikeguard.runtime import eval_mode

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    runner = SuiteRunner(Plan(model, (), suite, eps, num_classes), 1)
    generator = torch.Generator().manual_seed(seed)
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    best, margin = x.clone(), true_class_probability(logits, y)
    broken = logits.argmax(1) != y
    for spec in suite.attacks:
        if spec.norm != "linf":
            continue
        radius = eps if spec.eps is None else spec.eps
        for member in (runner.members(spec) or ("",)) if not spec.random else ("",):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                return best
            context = bank.under(model, member, runner.twins) if member else contextlib.nullcontext(model)
            with eval_mode(model), context as target:
                x_adv = craft(spec, target, x[idx], y[idx], radius, 1, generator, num_classes)
            x_adv = within_budget(x_adv, x[idx], radius, "linf")
            with eval_mode(model), torch.no_grad():
                out = model(x_adv)
            wrong, f = out.argmax(1) != y[idx], true_class_probability(out, y[idx])
            lower = wrong | (f < margin[idx])
            best[idx[lower]] = x_adv[lower]
            margin[idx[lower]] = torch.minimum(margin[idx[lower]], f[lower])
            broken[idx[wrong]] = True
    return best
