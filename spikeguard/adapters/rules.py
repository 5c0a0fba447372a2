"""Estimator rules on SpikingJelly and snnTorch neurons: the same rule objects that drive spikeguard's own
neurons (spikeguard/snn/registry.py: ``fire(estimator, neuron, currents)`` and ``derivative(estimator, v,
sigma)``), built-in or registered with ``register_estimator``.

* A rule of kind ``surrogate`` is the library's own forward with the rule's ``derivative`` as d spike / d v:
  the neuron's surrogate attribute is swapped for a spike function calling it (the library's forward
  convention kept), so the library's BPTT runs through it. Every neuron with a surrogate attribute.
* Any other rule (``bptr``, ``hart``, ``pdsg``, a user's) gets the neuron as a :class:`LibraryNeuron`, which
  offers what spikeguard's IFNeuron offers a rule (``integrate``, ``tau``, ``threshold``) by running the
  library's own neuron over a current sequence. A multi-step neuron's call holds the whole sequence. A
  single-step neuron sees one step per call, so a gradient-free first pass records every step's input and,
  in the second, call t runs the rule on that sequence and returns step t's spikes, the gradient the rule
  gives any step's current routed to call t's input. When every step's input depends on the model's input
  alike (an image repeated over time, then layers linear per step; rate rules in any depth), the input
  gradient equals the multi-step neuron's (tests/test_ecosystem.py: spikeguard, SpikingJelly, snnTorch).
  These rules need the neuron's dynamics (leak, input scale): known for the classes each library adapter
  lists; other classes keep their own backward for them and are listed as not applicable.
* ``ann`` (BPDA): the model's spiking logits with the gradient of the same model whose known neurons are
  replaced by their ReLU twin relu(scale * I / thr) (spikeguard.attacks.bpda).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from spikeguard.adapters.library import ExternalNeuron, external_neurons
from spikeguard.adapters.state import preserved_state
from spikeguard.snn import local_derivatives
from spikeguard.snn.registry import Estimator, parse_estimator

NEEDS_DYNAMICS = ("rate", "temporal", "ann")


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, derivative, strict):
        ctx.save_for_backward(v)
        ctx.derivative, ctx.layer = derivative, local_derivatives.RECORDER.layer
        return (v > 0 if strict else v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        local = ctx.derivative(v)
        local_derivatives.RECORDER.add(ctx.layer, local)  # counted only while local_derivatives.recording runs
        return grad * local, None, None


class SpikeWith(nn.Module):
    """A surrogate object either library accepts: the Heaviside step forward (``strict``: v > 0, snnTorch's
    convention; else v >= 0, SpikingJelly's) and ``derivative(v)`` backward. With ``record`` it keeps the
    arguments it was called with (detached): the neuron's membrane minus threshold."""

    def __init__(self, derivative: Callable[[torch.Tensor], torch.Tensor], strict: bool, record: bool = False):
        super().__init__()
        self.derivative, self.strict, self.record = derivative, strict, record
        self.seen: list[torch.Tensor] = []

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.record:
            self.seen.append(v.detach())
        return _Spike.apply(v, self.derivative, self.strict)


def surrogate_for(name: str | Estimator, library: str, threshold: torch.Tensor | float = 1.0) -> SpikeWith:
    """Estimator ``name`` as a surrogate object for ``library``: its rule's derivative at every step. The
    neuron's ``threshold`` is the scale a threshold-relative rule (``threshold_triangle``) reads; the
    fixed-width shapes ignore it."""
    est = parse_estimator(name)
    return SpikeWith(lambda v: est.derivative(v, threshold), strict=library == "snntorch")


# ------------------------------------------------------------------------------------------- coverage

def member_kind(name: str) -> str:
    return "ann" if name == "ann" else parse_estimator(name).kind


def not_applicable(neuron: ExternalNeuron, member: str) -> str | None:
    """Why ``member`` cannot drive ``neuron``, or None when it applies."""
    if member == "native":
        return None
    if member_kind(member) in NEEDS_DYNAMICS and neuron.known is None:
        return (f"{member} needs the neuron's dynamics (leak, input scale); spikeguard knows them for "
                f"{', '.join(neuron.lib.known)} only")
    return None


def coverage(model: nn.Module, members) -> dict:
    """Per member: whether it applied to every external neuron, and which classes it could not drive."""
    neurons = external_neurons(model)
    out = {}
    for member in members:
        missing = {n.class_name: reason for n in neurons if (reason := not_applicable(n, member))}
        applied = sum(1 for n in neurons if not_applicable(n, member) is None)
        out[member] = {"applied": applied == len(neurons) and applied > 0,
                       "neurons_driven": applied, "neurons": len(neurons), "not_applicable": missing}
    return out


# ------------------------------------------------------------------------------------------- switching

@contextlib.contextmanager
def swapped_surrogates(neurons: list[ExternalNeuron], make: Callable[[ExternalNeuron], nn.Module]) -> Iterator[dict]:
    """Each neuron's surrogate attribute set to ``make(neuron)``; restored on exit."""
    previous = [getattr(n.module, n.attribute) for n in neurons]
    shims = {}
    try:
        for n in neurons:
            shims[n.name] = make(n)
            _set(n.module, n.attribute, shims[n.name])
        yield shims
    finally:
        for n, old in zip(neurons, previous):
            _set(n.module, n.attribute, old)


def _set(module: nn.Module, attribute: str, value) -> None:
    """Set the surrogate attribute where the library keeps it: a child module (SpikingJelly) stays one, a
    plain attribute (snnTorch's function) stays plain, so the module tree is the same after restoring."""
    if attribute in module._modules:
        module._modules[attribute] = value
    else:
        module.__dict__[attribute] = value


@contextlib.contextmanager
def swapped_forwards(neurons: list[ExternalNeuron], make: Callable[[ExternalNeuron, Callable], Callable]) -> Iterator[None]:
    """Replace each neuron's forward by ``make(neuron, original_forward)``; restored on exit."""
    try:
        for n in neurons:
            n.module.forward = make(n, type(n.module).forward.__get__(n.module))
        yield
    finally:
        for n in neurons:
            n.module.__dict__.pop("forward", None)


def with_spikes(out, spikes: torch.Tensor):
    """The neuron's output with its spike tensor replaced (snnTorch may return (spk, mem))."""
    return (spikes, *out[1:]) if isinstance(out, tuple) else spikes


def _spikes(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class LibraryNeuron:
    """A library neuron as an estimator rule sees spikeguard's neuron. Currents are in spikeguard's units
    (u <- tau * u + I), i.e. the library's input times its input scale; ``integrate`` runs the library's
    own neuron over them from rest (its state restored afterwards)."""

    def __init__(self, neuron: ExternalNeuron, original: Callable):
        self.neuron, self.original = neuron, original
        dynamics: tuple[Any, Any] = neuron.dynamics() if neuron.known else (None, 1.0)
        self.tau, self.scale = dynamics
        self.threshold = neuron.threshold()

    def integrate(self, currents: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None,
                  record: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.neuron
        shim = SpikeWith(lambda v: estimator.derivative(v, sigma), n.lib.strict, record=record)
        inputs = currents / self.scale if not isinstance(self.scale, float) or self.scale != 1.0 else currents
        seen: list[torch.Tensor] = []  # v at each step's firing (snnTorch also calls it for the reset first)
        with preserved_state(n.module), swapped_surrogates([n], lambda _: shim):
            n.lib.reset(n.module)
            if n.multi_step:
                spikes = _spikes(self.original(inputs))
                seen = shim.seen[-len(currents):]
            else:
                steps = []
                for step in inputs:
                    steps.append(_spikes(self.original(step)))
                    seen += shim.seen[-1:]
                spikes = torch.stack(steps)
        membranes = torch.stack(seen) + self.threshold if record else None
        return spikes, membranes


def _rule_forward(estimator: Estimator, inputs: dict[str, list], calls: dict[str, int]):
    """The forward of a neuron driven by ``estimator``'s rule (see the module docstring)."""
    def make(n: ExternalNeuron, original: Callable) -> Callable:
        proxy = LibraryNeuron(n, original)

        def forward(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            if n.multi_step:
                return with_spikes(out, estimator.fire(proxy, proxy.scale * x))
            t = calls[n.name] = calls.get(n.name, -1) + 1
            # the recorded sequence's values, every step's gradient routed to this call's input (the only
            # one this call can reach): see the module docstring
            sequence = torch.stack(inputs[n.name]) + (x - x.detach())
            return with_spikes(out, estimator.fire(proxy, proxy.scale * sequence)[t])
        return forward
    return make


def _recording_forward(inputs: dict[str, list]):
    def make(n: ExternalNeuron, original: Callable) -> Callable:
        def forward(x, *args, **kwargs):
            inputs.setdefault(n.name, []).append(x.detach())
            return original(x, *args, **kwargs)
        return forward
    return make


class SequencePasses(nn.Module):
    """A gradient-free pass recording every single-step neuron's inputs, then the pass that carries the
    gradient (each neuron's state cleared before either)."""

    def __init__(self, model: nn.Module, neurons: list[ExternalNeuron], estimator: Estimator):
        super().__init__()
        self.model, self._neurons, self._estimator = model, neurons, estimator

    def forward(self, x):
        from spikeguard.adapters.library import reset_state

        inputs: dict[str, list] = {}
        with torch.no_grad(), swapped_forwards(self._neurons, _recording_forward(inputs)):
            reset_state(self.model)
            self.model(x)
        with swapped_forwards(self._neurons, _rule_forward(self._estimator, inputs, {})):
            reset_state(self.model)
            return self.model(x)


def _relu_twin(n: ExternalNeuron, original: Callable) -> Callable:
    def forward(x, *args, **kwargs):
        out = original(x, *args, **kwargs)
        _, scale = n.dynamics()
        return with_spikes(out, torch.relu(scale * x / n.threshold()))
    return forward


@contextlib.contextmanager
def under(model: nn.Module, member: str) -> Iterator[nn.Module]:
    """``model`` (holding SpikingJelly / snnTorch neurons) attacked with bank member ``member``; every
    attribute or forward switched here is restored on exit."""
    from spikeguard.attacks.bpda import BPDAModel

    driven = [n for n in external_neurons(model) if not_applicable(n, member) is None]
    if member == "ann":
        yield BPDAModel(model, twin=lambda: swapped_forwards(driven, _relu_twin))
        return
    est = parse_estimator(member)
    _ = est.rule  # a rule that cannot load fails here, before any switch
    if est.kind == "surrogate":
        with swapped_surrogates(driven, lambda n: surrogate_for(est, n.library, n.threshold())):
            yield model
    elif any(not n.multi_step for n in driven):
        yield SequencePasses(model, driven, est)
    else:
        with swapped_forwards(driven, _rule_forward(est, {}, {})):
            yield model
