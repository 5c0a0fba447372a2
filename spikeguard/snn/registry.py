"""The spiking core's named choices, readable without PyTorch: backward estimators and input encoders.

An estimator *family* maps to its facts and to its *rule*, the object that implements it (loaded on first
use from "module:attribute"). A rule has

* ``fire(estimator, neuron, currents) -> spikes``: the spikes [T, N, ...] of one layer for currents
  [T, N, ...], with whatever backward pass the family defines; ``neuron.integrate`` is the membrane loop;
* ``derivative(estimator, v, sigma=None)``: d spike / d v at v = u - threshold, for the rules that use one;
  ``sigma`` is a scale the rule reads from its layer (pdsg: the membrane std; threshold-relative
  surrogates: the threshold), None for the fixed-width shapes.

So the neuron runs any estimator without knowing its family. :class:`Estimator` is the value the rest of
the code passes around (``family`` and ``width``, named ``family`` or ``family:width``); ``parse_estimator``
checks a name against this registry, ``parse_training_estimator`` also that the family may train a model
(its ``trains`` fact). Add a family with :func:`register_estimator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from spikeguard.errors import UserError
from spikeguard.registry import Registry

ESTIMATORS = Registry("estimator")
ESTIMATOR_KINDS = ("surrogate", "rate", "temporal", "adaptive")
ENCODERS = Registry("encoder")

_IMPL = "spikeguard.snn.estimators"


def register_estimator(family: str, target: Any = None, *, derivative: Callable | None = None,
                       default_width: float | None = None, kind: str | None = None, named_width: bool = True,
                       description: str = "", trains: bool | None = None, replace: bool = False):
    """Register an estimator family; ``parse_estimator("family:width")`` accepts it afterwards.

    * A surrogate shape: ``register_estimator("cosine", derivative=bump, default_width=1.0)``, where
      ``bump(v, width)`` is d spike / d v (a tensor function); every step's spike gets it (BPTT).
    * Any other rule: ``register_estimator("mine", MyRule, default_width=...)`` (or ``"module:MyRule"``, or
      as a class decorator), where ``MyRule`` (a class, instantiated once without arguments, or an object)
      has ``fire(estimator, neuron, currents)`` and, if its spikes use one, ``derivative(estimator, v, sigma)``.

    ``default_width=None`` makes the family widthless (its name is the family alone; a width is refused);
    ``named_width=False`` keeps a width but leaves it out of the name (``straight_through``).
    ``trains``: whether ``spikeguard train --train-estimator`` accepts the family. Default: yes for a
    surrogate shape (the ordinary spike forward, a bump backward), no for any other rule until its author
    says so (its forward need not be the ordinary spike).
    """
    if ":" in family or not family:
        raise ValueError(f"estimator family {family!r} must be a non-empty name without ':'")
    if derivative is not None:
        if target is not None:
            raise ValueError("give an estimator a derivative or a rule, not both")
        target = _SurrogateShape(derivative)
        kind = kind or "surrogate"
    if default_width is not None and not (math.isfinite(default_width) and default_width > 0):
        raise ValueError(f"default width of {family!r} must be a positive number, got {default_width}")
    kind = kind or "surrogate"
    if kind not in ESTIMATOR_KINDS:
        raise ValueError(f"estimator kind must be one of {', '.join(ESTIMATOR_KINDS)}, got {kind!r}")
    if trains is None:
        trains = isinstance(target, _SurrogateShape)
    facts = dict(kind=kind, default_width=None if default_width is None else float(default_width),
                 named_width=named_width and default_width is not None, description=description,
                 trains=bool(trains))
    return ESTIMATORS.register(family, target, replace=replace, **facts)


def unregister_estimator(family: str) -> None:
    ESTIMATORS.unregister(family)


class _SurrogateShape:
    """A rule given by its derivative alone: loads the torch-side Surrogate on first use."""

    def __init__(self, shape: Callable):
        self.shape = shape
        self._rule = None

    def _load(self):
        if self._rule is None:
            from spikeguard.snn.estimators import Surrogate

            self._rule = Surrogate(self.shape)
        return self._rule

    def fire(self, estimator, neuron, currents):
        return self._load().fire(estimator, neuron, currents)

    def derivative(self, estimator, v, sigma=None):
        return self._load().derivative(estimator, v, sigma)


# Built-in families, in the order every listing shows them. Widths are the conventional ones: docs/method.md's
# ensemble uses triangle 1.0, sigmoid 4.0, atan 2.0. Implementations: spikeguard/snn/estimators.py.
# trains: every family whose forward is the ordinary spike H(u - threshold) and which trained the digits CNN
# (1 epoch to >90% validation accuracy, the same run for each); straight_through did not (its gradient
# passes every neuron at every membrane value: the run stays at chance), so it is for attacks only.
register_estimator("triangle", f"{_IMPL}:TRIANGLE", default_width=1.0, trains=True,
                   description="max(0, gamma - |v|) / gamma^2 (the default training surrogate)")
register_estimator("sigmoid", f"{_IMPL}:SIGMOID", default_width=4.0, trains=True,
                   description="derivative of sigmoid(alpha v)")
register_estimator("atan", f"{_IMPL}:ATAN", default_width=2.0, trains=True,
                   description="derivative of arctan(pi/2 alpha v) / pi + 1/2")
register_estimator("rectangular", f"{_IMPL}:RECTANGULAR", default_width=1.0, trains=True,
                   description="1/width inside |v| < width/2")
register_estimator("exponential", f"{_IMPL}:EXPONENTIAL", default_width=0.5, trains=True,
                   description="exp(-|v| / width) / (2 width), a Laplace bump")
register_estimator("fast_sigmoid", f"{_IMPL}:FAST_SIGMOID", default_width=25.0, trains=True,
                   description="1 / (k |v| + 1)^2, snnTorch's fast_sigmoid(slope=k) (area 2/k)")
register_estimator("straight_through", f"{_IMPL}:STRAIGHT_THROUGH", default_width=1.0, named_width=False,
                   trains=False, description="d spike / dv := 1 (attacks only: training with it stays at chance)")
register_estimator("bptr", f"{_IMPL}:RateEstimator", kind="rate", trains=True,
                   description="rate gradient: the slope of firing rate against mean input (BPTR / RGA)")
register_estimator("hart", f"{_IMPL}:Hart", kind="temporal", default_width=0.5, trains=True,
                   description="time-mean of per-step triangle gradients, membrane detached between steps")
register_estimator("pdsg", f"{_IMPL}:Pdsg", kind="adaptive", trains=True,
                   description="Gaussian surrogate of the measured per-channel membrane std")
# scale-free: width x the layer's threshold. An attack member (not tried for training: at threshold 1 it is
# triangle of the same width). Its rule has no fixed-width shape, so SURROGATES leaves it out.
register_estimator("threshold_triangle", f"{_IMPL}:THRESHOLD_TRIANGLE", default_width=1.0, trains=False,
                   description="triangle of half-width width x the layer's threshold (scale-free: a threshold "
                               "and the current feeding it scaled alike change nothing)")


@dataclass(frozen=True)
class Estimator:
    """A named backward estimator. ``width`` is the family's shape parameter (gamma or alpha).

    Compares and hashes as the pair (family, width); its behaviour is its family's registered rule."""

    family: str
    width: float = 0.0

    @property
    def name(self) -> str:
        if ESTIMATORS.facts(self.family)["named_width"]:
            return f"{self.family}:{self.width:g}"
        return self.family

    @property
    def kind(self) -> str:
        return ESTIMATORS.facts(self.family)["kind"]

    @property
    def is_rate(self) -> bool:
        return self.kind == "rate"

    @cached_property
    def rule(self) -> Any:
        """The family's implementation (imported, and for a class instantiated, on first use)."""
        rule = ESTIMATORS.load(self.family)
        return rule() if isinstance(rule, type) else rule

    def fire(self, neuron, currents):
        """Spikes [T, N, ...] of ``neuron`` for currents [T, N, ...], with this estimator's backward."""
        return self.rule.fire(self, neuron, currents)

    def derivative(self, v, sigma=None):
        """d spike / d v at v = u - threshold. ``hart`` uses the triangle of its width; ``pdsg`` needs the
        ``sigma`` its layer measured in the forward pass (``membrane_sigma``)."""
        return self.rule.derivative(self, v, sigma)

    def __reduce__(self):  # pickles as the value, without the loaded rule
        return (Estimator, (self.family, self.width))

    def __copy__(self) -> Estimator:  # an immutable value: copies (of models too) share it, rule loaded
        return self

    def __deepcopy__(self, memo: dict) -> Estimator:
        return self


def parse_estimator(spec: str | Estimator, width: float | None = None) -> Estimator:
    """``"triangle"``, ``"triangle:0.5"`` or ``("triangle", width=0.5)`` -> Estimator; UserError otherwise."""
    if isinstance(spec, Estimator):
        return spec
    family, _, text = str(spec).partition(":")
    if family not in ESTIMATORS:
        raise UserError(f"unknown estimator '{spec}'; choose from {', '.join(ESTIMATORS)}")
    if text:
        if width is not None:
            raise UserError(f"estimator '{spec}' gives its width twice")
        try:
            width = float(text)
        except ValueError:
            raise UserError(f"estimator '{spec}': width '{text}' is not a number") from None
    default = ESTIMATORS.facts(family)["default_width"]
    if default is None:
        if width is not None:
            raise UserError(f"estimator '{family}' takes no width")
        return Estimator(family)
    if width is None:
        width = default
    if not math.isfinite(width) or width <= 0:
        raise UserError(f"estimator '{spec}': width must be a positive number, got {width}")
    return Estimator(family, float(width))


def training_estimators() -> tuple[str, ...]:
    """The families a model may be trained with (fact ``trains``), in registration order."""
    return ESTIMATORS.names(trains=True)


def parse_training_estimator(spec: str | Estimator) -> Estimator:
    """``parse_estimator`` for ``--train-estimator``: also refuses a family that is not for training, and
    ``ann`` (BPDA, an attack-time wrapper: the ANN twin trains with ``--network ann``)."""
    if str(spec).partition(":")[0] == "ann":
        raise UserError("train_estimator 'ann' is BPDA through the ANN twin, an attack-time member; to train "
                        "the ANN twin itself use network 'ann' (--network ann)")
    family = str(spec).partition(":")[0]
    if family not in ESTIMATORS or not ESTIMATORS.facts(family)["trains"]:
        what = "is for attacks only, not training" if family in ESTIMATORS else "is not a registered estimator"
        raise UserError(f"train_estimator '{spec}' {what}; choose from {', '.join(training_estimators())} "
                        "(optionally family:width)")
    return parse_estimator(spec)


def __getattr__(name: str) -> Any:
    if name == "ESTIMATOR_FAMILIES":  # every registered family, now (registration order)
        return ESTIMATORS.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Encoders: how an input batch becomes the time-folded input of the spiking body (spikeguard/snn/encoders.py).
_ENC = "spikeguard.snn.encoders"
ENCODERS.register("direct", f"{_ENC}:DirectEncoder", inputs="image", stochastic=False,
                  description="the same normalised image at every step")
ENCODERS.register("poisson", f"{_ENC}:PoissonEncoder", inputs="image", stochastic=True,
                  description="Bernoulli spikes of the pixel value (stochastic: evaluation needs EoT)")
ENCODERS.register("frames", f"{_ENC}:FramesEncoder", inputs="event", stochastic=False,
                  description="event frame t at step t (event data; set automatically)")
