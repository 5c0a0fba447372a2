"""Training objectives. Each is ``loss(model, x, y) -> (loss, parts)``; ``parts`` holds detached scalars
for logging ("ce", and "penalty" where there is one). ``after_step`` runs after every optimiser step.
``generators`` names the private random generators a defense draws from (a training checkpoint stores their
states under these names), and ``reseed_examples`` gives its adversarial examples a stream of their own (one
per process under torchrun)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.adapters import stateless
from spikeguard.attacks import fgsm, pgd
from spikeguard.defenses.gradient_norm import gradient_norm_terms
from spikeguard.defenses.orthogonal import retract_model
from spikeguard.defenses.sparsity import sparsity_terms
from spikeguard.runtime import eval_mode

Parts = dict[str, torch.Tensor]


@dataclass
class AdversarialExamples:
    """FGSM or PGD examples for training, made in eval mode under the model's training estimator."""

    attack: str = "pgd"
    eps: float = 8 / 255
    alpha: float = 2.55 / 255
    steps: int = 7
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with stateless(model) as model:
            return self._make(model, x, y)

    def _make(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            if self.attack == "fgsm":
                return fgsm(model, x, y, self.eps)
            return pgd(model, x, y, self.eps, self.alpha, self.steps, random_start=True,
                       generator=self.generator, keep_best=False)

    def reseed(self, seed: int) -> None:
        if self.generator is not None:
            self.generator.manual_seed(seed)


class Defense:
    name = "vanilla"
    examples: AdversarialExamples | None = None  # a defense training on adversarial examples sets its own

    def generators(self) -> dict[str, torch.Generator]:
        """This defense's private generators by name. The names are part of the checkpoint format: keep them."""
        generator = self.examples.generator if self.examples is not None else None
        return {"examples.generator": generator} if generator is not None else {}

    def reseed_examples(self, seed: int) -> None:
        """Reseed the generator of the adversarial examples' random starts (none without examples)."""
        if self.examples is not None:
            self.examples.reseed(seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        with stateless(model) as model:  # SpikingJelly / snnTorch state reset before the pass, restored after
            ce = F.cross_entropy(model(x), y)
        return ce, {"ce": ce.detach()}

    def after_step(self, model: nn.Module) -> None:
        pass


class AdversarialTraining(Defense):
    """Cross-entropy on adversarial examples only (Madry et al.)."""

    name = "at"

    def __init__(self, examples: AdversarialExamples):
        self.examples = examples

    def loss(self, model, x, y):
        return super().loss(model, self.examples(model, x, y), y)


class Retracting:
    """RAT's orthogonality retraction after each optimiser step, its rows drawn from a generator of its own
    (stored in checkpoints as "rows"); mixed into RAT and SR + RAT."""

    beta: float
    rows: torch.Generator

    def _retraction(self, beta: float, seed: int) -> None:
        self.beta, self.rows = beta, torch.Generator().manual_seed(seed)

    def generators(self):
        return {**super().generators(), "rows": self.rows}

    def after_step(self, model):
        retract_model(model, self.beta, generator=self.rows)


class RobustAdversarialTraining(Retracting, AdversarialTraining):
    """RAT: FGSM adversarial training plus the orthogonality retraction after each step."""

    name = "rat"

    def __init__(self, examples: AdversarialExamples, beta: float = 0.004, seed: int = 0):
        super().__init__(examples)
        self._retraction(beta, seed)


class GradientRegularization(Defense):
    """GR: cross-entropy + lamb * ||d CE / d x||_2^2 (exact, double backprop)."""

    name = "gr"

    def __init__(self, lamb: float):
        self.lamb = lamb

    def loss(self, model, x, y):
        logits, penalty = gradient_norm_terms(model, x, y)
        ce = F.cross_entropy(logits, y)
        return ce + self.lamb * penalty, {"ce": ce.detach(), "penalty": penalty.detach()}


class SparsityRegularization(Defense):
    """SR: cross-entropy + lamb * SR penalty; with ``examples`` it is SR*, computed on adversarial inputs."""

    def __init__(self, lamb: float, h: float = 0.01, examples: AdversarialExamples | None = None):
        self.lamb, self.h, self.examples = lamb, h, examples
        self.name = "sr" if examples is None else "sr_star"

    def loss(self, model, x, y):
        if self.examples is not None:
            x = self.examples(model, x, y)
        logits, penalty = sparsity_terms(model, x, y, self.h)
        ce = F.cross_entropy(logits, y)
        return ce + self.lamb * penalty, {"ce": ce.detach(), "penalty": penalty.detach()}


class SparsityRobustAdversarialTraining(Retracting, SparsityRegularization):
    """SR + RAT: SR (its cross-entropy and its penalty) on RAT's FGSM examples, then RAT's orthogonality
    retraction after each step. SR* is the same with AT's examples and no retraction."""

    def __init__(self, lamb: float, h: float, examples: AdversarialExamples, beta: float = 0.004, seed: int = 0):
        super().__init__(lamb, h, examples)
        self.name = "sr_rat"
        self._retraction(beta, seed)


class SparsityGradientRegularization(Defense):
    """SR + GR: cross-entropy + lamb * SR penalty + gr_lamb * ||d CE / d x||_2^2 on clean inputs. The two
    penalties keep their own passes (two for SR, one for GR's double backprop): each is exactly the one its
    defense alone trains with."""

    name = "sr_gr"

    def __init__(self, lamb: float, h: float, gr_lamb: float):
        self.lamb, self.h, self.gr_lamb = lamb, h, gr_lamb

    def loss(self, model, x, y):
        logits, sr_penalty = sparsity_terms(model, x, y, self.h)
        _, gr_penalty = gradient_norm_terms(model, x, y)
        ce = F.cross_entropy(logits, y)
        return (ce + self.lamb * sr_penalty + self.gr_lamb * gr_penalty,
                {"ce": ce.detach(), "penalty": sr_penalty.detach(), "gr_penalty": gr_penalty.detach()})
