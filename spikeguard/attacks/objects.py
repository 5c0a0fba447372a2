"""Attack objects in the torchattacks convention, one class per attack kind of the registry (registry.py):

    attack = spikeguard.attacks.PGD(model, eps=8/255, steps=10, estimator="sigmoid:4")
    x_adv = attack(x, y)

The classes are generated from the registry (``attack_class``), not written out: a kind's parameters and
their defaults are the registry's, so a suite entry and an object with the same settings craft the same
examples. Each call works the same on spikeguard, SpikingJelly and snnTorch models: eval mode, library
neuron state cleared before every forward pass, the backward ``estimator`` applied (a bank member: a
surrogate, ``bptr``, ``hart``, ``pdsg``, ``ann`` for BPDA; None: the model's own), and on return the
caller's train/eval mode, estimator and neuron state as they were. Every example is checked to lie in
[0, 1] and the eps ball, as in an evaluation.

``eot_draws``: forward passes averaged per gradient and score, for a stochastic model (EoT); ``seed``: the
attack's random stream (random starts, queries), continued from call to call; ``num_classes``: read off
the model's output when not given.

Step sizes: ``alpha`` is a fraction of ``eps`` (as suites write it: ``alpha=0.25`` is eps / 4). For an
absolute step in pixel units (torchattacks' ``alpha=2/255``) pass ``step_size=2/255`` instead.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.attacks.registry import (
    ATTACKS,
    AttackCall,
    attack_class_names,
    attack_kind,
)
from spikeguard.errors import UserError


class Attack:
    """Base of the generated classes; ``kind`` names the registry entry."""

    kind: str = ""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, *, estimator: str | None = None,
                 norm: str | None = None, step_size: float | None = None, eot_draws: int = 1, seed: int = 0,
                 num_classes: int | None = None, frame_range: int | None = None, **params: Any):
        entry = attack_kind(self.kind)
        self.model, self.eps, self.estimator, self.draws = model, float(eps), estimator, int(eot_draws)
        self.norm = norm or entry.norms[0]
        if self.norm not in entry.norms:
            raise UserError(f"{type(self).__name__}: norm '{self.norm}' is not one of {', '.join(entry.norms)}")
        unknown = set(params) - set(entry.params)
        if unknown:
            allowed = ", ".join(entry.params) or "none"
            raise UserError(f"{type(self).__name__}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                            f"its parameters: {allowed}")
        self.params = {**entry.params, **params}
        if step_size is not None:
            if "alpha" not in entry.params:
                raise UserError(f"{type(self).__name__} takes no step size")
            if params.get("alpha") is not None:
                raise UserError("give alpha (a fraction of eps) or step_size (absolute), not both")
            self.params["alpha"] = float(step_size) / self.eps
        if estimator is not None and not entry.gradient:
            raise UserError(f"{type(self).__name__} uses no gradient: it takes no estimator")
        if estimator is not None:
            from spikeguard.evaluation.bank import resolve

            (self.estimator,) = resolve([estimator])
        self.seed, self.num_classes, self.frame_range = seed, num_classes, frame_range
        self.generator = torch.Generator().manual_seed(seed)
        if self.norm == "events" and frame_range is None:
            raise UserError(f"{type(self).__name__} edits whole events: pass frame_range (events per bin at "
                            "frame value 1)")

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (f"{type(self).__name__}(eps={self.eps:.6g}, norm={self.norm!r}, estimator={self.estimator!r}"
                f"{', ' + settings if settings else ''})")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples for images ``x`` in [0, 1] with labels ``y`` (same shape and device as x)."""
        from spikeguard.adapters import preserved_state
        from spikeguard.evaluation import bank
        from spikeguard.external import wrap_external
        from spikeguard.runtime import eval_mode

        x, y = x.detach(), torch.as_tensor(y, device=x.device).long()
        if x.min() < 0 or x.max() > 1:
            raise UserError(f"{type(self).__name__}: images x must lie in [0, 1] (found "
                            f"[{float(x.min()):.3g}, {float(x.max()):.3g}])")
        model = wrap_external(self.model)
        with preserved_state(self.model), eval_mode(model):
            num_classes = self.num_classes or _classes(model, x)
            member = self.estimator or ""
            context = bank.under(model, member) if member else contextlib.nullcontext(model)
            with context as target:
                if attack_kind(self.kind).random:
                    return self._random(target, x, y, num_classes)
                return self._guard(self._craft(target, x, y, num_classes), x)

    def _craft(self, target: nn.Module, x, y, num_classes: int) -> torch.Tensor:
        entry = attack_kind(self.kind)
        if entry.library and x.dim() == 5:  # event frames as [N, T*C, H, W] for AutoAttack's code
            from spikeguard.evaluation.runner import FoldedFrames

            target, shape, x = FoldedFrames(target, x.shape[1:]), x.shape, x.flatten(1, 2)
            return self._call(entry, target, x, y, num_classes).reshape(shape)
        return self._call(entry, target, x, y, num_classes)

    def _call(self, entry, target, x, y, num_classes: int) -> torch.Tensor:
        call = AttackCall(eps=self.eps, params=self.params, norm=self.norm, draws=self.draws,
                          generator=self.generator, num_classes=num_classes, budget=self.params.get("budget"),
                          frame_range=self.frame_range)
        return entry.load()(target, x, y, call)

    def _guard(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "events":
            from spikeguard.attacks.events import within_event_budget

            assert self.frame_range is not None  # __init__ refused an events attack without it
            return within_event_budget(x_adv, x, self.params.get("budget"), self.frame_range)
        from spikeguard.evaluation.runner import within_budget

        return within_budget(x_adv, x, self.eps, self.norm)

    @torch.no_grad()
    def _random(self, model: nn.Module, x, y, num_classes: int) -> torch.Tensor:
        """A random baseline's ``draws`` draws: per sample the first misclassified draw, else the one of
        highest loss."""
        best, loss = x.clone(), torch.full((len(x),), -float("inf"), device=x.device)
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(int(self.params.get("draws", 1))):
            x_rand = self._guard(self._craft(model, x, y, num_classes), x)
            out = model(x_rand)
            wrong, f = out.argmax(1) != y, F.cross_entropy(out, y, reduction="none")
            take = ~broken & (wrong | (f > loss))
            best[take], loss[take] = x_rand[take], f[take]
            broken |= wrong
        return best


def _classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def class_name(kind: str) -> str:
    return ATTACKS.facts(kind)["class_name"]


_CLASSES: dict[str, type] = {}


def attack_class(kind: str) -> type:
    """The Attack subclass of registered kind ``kind`` (made once per registry entry)."""
    entry = attack_kind(kind)
    cached = _CLASSES.get(kind)
    if cached is None or getattr(cached, "_entry", None) is not entry:
        params = ", ".join(f"{k}={v!r}" for k, v in entry.params.items()) or "none"
        doc = (f"Attack kind '{kind}' of spikeguard's attack registry as an object: "
               f"``{class_name(kind)}(model, eps, **params)(x, y) -> x_adv``. Parameters and defaults: {params}. "
               f"Norms: {', '.join(entry.norms)}. See spikeguard.attacks.objects.")
        cached = type(class_name(kind), (Attack,), {"kind": kind, "_entry": entry, "__doc__": doc,
                                                    "__module__": "spikeguard.attacks"})
        _CLASSES[kind] = cached
    return cached


def attack_classes() -> dict[str, type]:
    """Class name -> class, for every kind a suite may name (``transfer`` is PGD on another model: use PGD)."""
    return {name: attack_class(kind) for name, kind in attack_class_names().items()}
