"""The estimator bank for SpikingJelly and snnTorch neurons: detect them, reset them, switch their backward
pass to one bank member, and restore it.

Both libraries keep the spike's surrogate in a public attribute that every forward step calls with
``v - threshold``: ``surrogate_function`` (SpikingJelly ``activation_based`` neurons) and ``spike_grad``
(snnTorch). How each member reaches a neuron:

* surrogate shapes (``triangle:1``, ``sigmoid:4``, ..., ``straight_through``) replace that attribute by
  a spike function with spikeguard's derivative (the library's own forward convention kept: SpikingJelly
  fires at v >= thr, snnTorch at v > thr), so the library's own BPTT runs through it;
* ``pdsg`` does the same with a Gaussian whose width is the per-channel membrane std measured in a first,
  gradient-free pass;
* ``hart`` (per step: d s_t / d I_t = triangle(u_t - thr) times the neuron's input scale, no gradient
  through the membrane) and ``bptr`` (d s_t / d I_t = the rate map's slope at the time-mean input, measured
  in a first pass) replace the neuron's spike output by its value with that gradient;
* ``ann`` (BPDA) runs the model a second time with each neuron replaced by its ReLU twin
  relu(scale * I / thr) and returns the spiking logits with the twin's gradient.

Rules that need the neuron's dynamics (bptr, hart, ann) apply to SpikingJelly's IFNode, LIFNode and
ParametricLIFNode and snnTorch's Leaky (and subclasses); other neuron classes keep their own backward for
those members and are listed as not applicable, with the reason. Surrogates and pdsg apply to every neuron
with a surrogate attribute.

Single-step neurons see one time step per call, so bptr and hart apply their per-step slope at each step
instead of spreading the time mean over every step; for a network whose layers are linear in time between
the spiking layers (convolutions, linear layers, pooling, BatchNorm in eval mode) and whose logits are a
time mean, the input gradient is the same.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

LIBRARIES = ("spikingjelly", "snntorch")
RULE_CLASSES = {"spikingjelly": ("ParametricLIFNode", "LIFNode", "IFNode"), "snntorch": ("Leaky",)}
NEEDS_DYNAMICS = ("rate", "temporal", "ann")


def _library(module: nn.Module) -> str | None:
    for cls in type(module).__mro__:
        top = cls.__module__.partition(".")[0]
        if top in LIBRARIES:
            return top
    return None


@dataclass
class ExternalNeuron:
    name: str
    module: nn.Module
    library: str
    attribute: str          # surrogate_function or spike_grad
    known: str | None       # the library class whose dynamics the rules know, or None

    @property
    def class_name(self) -> str:
        return type(self.module).__name__

    @property
    def multi_step(self) -> bool:
        return getattr(self.module, "step_mode", "s") == "m"

    def threshold(self) -> torch.Tensor | float:
        if self.library == "spikingjelly":
            return float(self.module.v_threshold)
        return self.module.threshold.detach()

    def dynamics(self) -> tuple[Any, Any]:
        """(leak per step, scale of the input into the membrane) in spikeguard's terms u <- leak * u + scale * I."""
        m = self.module
        if self.known == "IFNode":
            return 1.0, 1.0
        if self.known == "LIFNode":
            decay = 1.0 / float(m.tau)
            return 1.0 - decay, (decay if m.decay_input else 1.0)
        if self.known == "ParametricLIFNode":
            decay = float(torch.sigmoid(m.w.detach()))
            return 1.0 - decay, (decay if m.decay_input else 1.0)
        if self.known == "Leaky":
            return m.beta.detach().clamp(0, 1), 1.0
        raise ValueError(f"no known dynamics for {self.class_name}")


def external_neurons(model: nn.Module) -> list[ExternalNeuron]:
    """Every SpikingJelly / snnTorch spiking neuron of ``model`` (a module with a surrogate attribute)."""
    out = []
    for name, module in model.named_modules():
        library = _library(module)
        if library is None:
            continue
        attribute = "surrogate_function" if library == "spikingjelly" else "spike_grad"
        if not hasattr(module, attribute):
            continue
        mro = [cls.__name__ for cls in type(module).__mro__]
        known = next((k for k in RULE_CLASSES[library] if k in mro), None)
        out.append(ExternalNeuron(name, module, library, attribute, known))
    return out


def has_external_neurons(model: nn.Module) -> bool:
    return bool(external_neurons(model))


# ------------------------------------------------------------------------------------------- state

def reset_state(model: nn.Module) -> None:
    """Clear the neuron state of every SpikingJelly / snnTorch module of ``model``."""
    for module in model.modules():
        library = _library(module)
        if library == "spikingjelly" and callable(getattr(module, "reset", None)) and hasattr(module, "_memories"):
            module.reset()
        elif library == "snntorch" and callable(getattr(module, "reset_mem", None)):
            module.reset_mem()


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, dict, dict, dict]]:
    saved = []
    for module in model.modules():
        if _library(module) is None:
            continue
        plain = {k: module.__dict__[k] for k in ("v_seq", "reset") if k in module.__dict__}
        saved.append((module, dict(getattr(module, "_memories", {})), dict(module._buffers), plain))
    return saved


def _restore(saved) -> None:
    for module, memories, buffers, plain in saved:
        if hasattr(module, "_memories"):
            module._memories.clear()
            module._memories.update(memories)
        module._buffers.clear()
        module._buffers.update(buffers)
        module.__dict__.update(plain)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """The neuron state of ``model`` as it was before the block, also when the block raises."""
    saved = _snapshot(model)
    try:
        yield
    finally:
        _restore(saved)


class Resetting(nn.Module):
    """``model`` with its neuron state cleared before every forward pass (parameters shared)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        reset_state(self.model)
        return self.model(*args, **kwargs)


@contextlib.contextmanager
def stateless(model: nn.Module) -> Iterator[nn.Module]:
    """A view of ``model`` whose every forward pass starts from a clean neuron state; on exit the model's
    state is what it was on entry. Models without library neurons are yielded unchanged."""
    if not any(_library(m) for m in model.modules()):
        yield model
        return
    with preserved_state(model):
        yield Resetting(model)


# ------------------------------------------------------------------------------------------- spikes

class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, derivative, strict):
        ctx.save_for_backward(v)
        ctx.derivative = derivative
        return (v > 0 if strict else v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * ctx.derivative(v), None, None


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


def surrogate_for(name: str, library: str) -> SpikeWith:
    """Estimator ``name`` (a surrogate shape) as a surrogate object for ``library``."""
    from spikeguard.snn.registry import parse_estimator

    est = parse_estimator(name)
    shape, width = est.rule.shape, est.width
    return SpikeWith(lambda v: shape(v, width), strict=library == "snntorch")


# ------------------------------------------------------------------------------------------- coverage

def member_kind(name: str) -> str:
    if name == "ann":
        return "ann"
    from spikeguard.snn.registry import parse_estimator

    return parse_estimator(name).kind


def not_applicable(neuron: ExternalNeuron, member: str) -> str | None:
    """Why ``member`` cannot drive ``neuron``, or None when it applies."""
    if member == "native":
        return None
    kind = member_kind(member)
    if kind in NEEDS_DYNAMICS and neuron.known is None:
        return (f"{member} needs the neuron's dynamics (leak, input scale); spikeguard knows them for "
                f"{', '.join(RULE_CLASSES[neuron.library])} only")
    return None


def coverage(model: nn.Module, members) -> dict:
    """Per member: whether it applied to every external neuron, and which classes it could not drive."""
    neurons = external_neurons(model)
    out = {}
    for member in members:
        missing: dict[str, str] = {}
        for neuron in neurons:
            reason = not_applicable(neuron, member)
            if reason:
                missing[neuron.class_name] = reason
        applied = sum(1 for n in neurons if not_applicable(n, member) is None)
        out[member] = {"applied": applied == len(neurons) and applied > 0,
                       "neurons_driven": applied, "neurons": len(neurons), "not_applicable": missing}
    return out


# ------------------------------------------------------------------------------------------- switching

@contextlib.contextmanager
def _attribute(neurons: list[ExternalNeuron], make: Callable[[ExternalNeuron], nn.Module]) -> Iterator[dict]:
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
def _forward(neurons: list[ExternalNeuron], make: Callable[[ExternalNeuron, Callable], Callable]) -> Iterator[None]:
    """Replace each neuron's forward by ``make(neuron, original_forward)``; restored on exit."""
    try:
        for n in neurons:
            n.module.forward = make(n, type(n.module).forward.__get__(n.module))
        yield
    finally:
        for n in neurons:
            n.module.__dict__.pop("forward", None)


def _with_spikes(out, spikes: torch.Tensor):
    """The neuron's output with its spike tensor replaced (snnTorch may return (spk, mem))."""
    if isinstance(out, tuple):
        return (spikes, *out[1:])
    return spikes


def _spikes(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _gradient_through(value: torch.Tensor, x: torch.Tensor, slope) -> torch.Tensor:
    """``value`` forward; d/dx = slope (elementwise)."""
    return value.detach() + slope * (x - x.detach())


def _rate_slope(neuron: ExternalNeuron, mean_input: torch.Tensor) -> torch.Tensor:
    from spikeguard.snn.estimators import rate_slope

    leak, scale = neuron.dynamics()
    threshold = neuron.threshold()
    if isinstance(leak, torch.Tensor) or isinstance(threshold, torch.Tensor):
        onset = (1.0 - leak) * threshold / 2
        m = scale * mean_input
        inside = (m >= onset) & (m <= onset + 2 * threshold)
        return inside.to(m.dtype) / (2 * threshold) * scale
    return rate_slope(scale * mean_input, float(leak), float(threshold)) * scale


class TwoPass(nn.Module):
    """A gradient-free measuring pass, then the pass that carries the gradient (bptr, pdsg)."""

    def __init__(self, model: nn.Module, measure: Callable[[], contextlib.AbstractContextManager],
                 attack: Callable[[], contextlib.AbstractContextManager]):
        super().__init__()
        self.model, self._measure, self._attack = model, measure, attack

    def forward(self, x):
        with torch.no_grad(), self._measure():
            reset_state(self.model)
            self.model(x)
        with self._attack():
            reset_state(self.model)
            return self.model(x)


class ExternalBPDA(nn.Module):
    """The spiking model's logits with the gradient of its ReLU twin (each known neuron -> relu(scale I / thr))."""

    def __init__(self, model: nn.Module, twin: Callable[[], contextlib.AbstractContextManager]):
        super().__init__()
        self.model, self._twin = model, twin

    def forward(self, x):
        with torch.no_grad():
            reset_state(self.model)
            spiking = self.model(x)
        with self._twin():
            reset_state(self.model)
            smooth = self.model(x)
        return smooth + (spiking - smooth).detach()


@contextlib.contextmanager
def under(model: nn.Module, member: str) -> Iterator[nn.Module]:
    """``model`` (holding SpikingJelly / snnTorch neurons) attacked with bank member ``member``; every
    attribute or forward switched here is restored on exit."""
    from spikeguard.snn.estimators import gaussian, membrane_sigma, triangle
    from spikeguard.snn.registry import parse_estimator

    neurons = external_neurons(model)
    driven = [n for n in neurons if not_applicable(n, member) is None]
    kind = member_kind(member)
    if kind == "surrogate":
        with _attribute(driven, lambda n: surrogate_for(member, n.library)):
            yield model
    elif kind == "adaptive":  # pdsg
        recorders = {}
        sigmas: dict[str, torch.Tensor] = {}

        def record(n):
            recorders[n.name] = SpikeWith(lambda v: torch.zeros_like(v), n.library == "snntorch", record=True)
            return recorders[n.name]

        @contextlib.contextmanager
        def measure():
            with _attribute(driven, record):
                yield
            for name, shim in recorders.items():
                seen = shim.seen if len(shim.seen) < 2 or shim.seen[0].shape == shim.seen[-1].shape else shim.seen[1:]
                sigmas[name] = membrane_sigma(torch.stack([s for s in seen if s.shape == seen[-1].shape]))

        def gauss(n):
            sigma = sigmas[n.name]
            return SpikeWith(lambda v: gaussian(v, sigma), n.library == "snntorch")

        yield TwoPass(model, measure, lambda: _attribute(driven, gauss))
    elif kind == "temporal":  # hart
        width = parse_estimator(member).width

        def hart(n, original):
            def forward(x, *args, **kwargs):
                with _attribute([n], lambda m: SpikeWith(lambda v: torch.zeros_like(v), m.library == "snntorch",
                                                         record=True)) as shims:
                    out = original(x, *args, **kwargs)
                seen = shims[n.name].seen
                v = torch.stack(seen).reshape(x.shape) if n.multi_step else seen[-1]
                _, scale = n.dynamics()
                return _with_spikes(out, _gradient_through(_spikes(out), x, triangle(v, width) * scale))
            return forward

        with _forward(driven, hart):
            yield model
    elif kind == "rate":  # bptr
        sums: dict[str, list] = {}

        def measure_rate(n, original):
            def forward(x, *args, **kwargs):
                entry = sums.setdefault(n.name, [0.0, 0])
                if n.multi_step:
                    entry[0], entry[1] = entry[0] + x.detach().mean(0), entry[1] + 1
                else:
                    entry[0], entry[1] = entry[0] + x.detach(), entry[1] + 1
                return original(x, *args, **kwargs)
            return forward

        def apply_rate(n, original):
            def forward(x, *args, **kwargs):
                out = original(x, *args, **kwargs)
                total, count = sums[n.name]
                slope = _rate_slope(n, total / count)
                return _with_spikes(out, _gradient_through(_spikes(out), x, slope))
            return forward

        @contextlib.contextmanager
        def measure():
            sums.clear()
            with _forward(driven, measure_rate):
                yield

        yield TwoPass(model, measure, lambda: _forward(driven, apply_rate))
    elif kind == "ann":
        def relu_twin(n, original):
            def forward(x, *args, **kwargs):
                out = original(x, *args, **kwargs)
                _, scale = n.dynamics()
                return _with_spikes(out, torch.relu(scale * x / n.threshold()))
            return forward

        yield ExternalBPDA(model, lambda: _forward(driven, relu_twin))
    else:
        raise ValueError(f"bank member '{member}' ({kind}) has no rule for external neurons")


# ------------------------------------------------------------------------------------------- provenance

def library_facts(model: nn.Module) -> dict | None:
    """The SNN libraries an external model uses (name and version), its neuron classes and a sha256 of its
    weights (every state_dict tensor, in key order); None for a model without library modules."""
    from importlib.metadata import PackageNotFoundError, version

    used = sorted({lib for m in model.modules() if (lib := _library(m))})
    if not used:
        return None
    versions = {}
    for lib in used:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError:
            versions[lib] = None
    return {"libraries": versions,
            "neuron_classes": sorted({n.class_name for n in external_neurons(model)}),
            "weights_sha256": weights_sha256(model)}


def weights_sha256(model: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- snnTorch output

def snntorch_logits(spk_rec: torch.Tensor, mem_rec: torch.Tensor | None = None, use: str = "spikes") -> torch.Tensor:
    """Logits [N, classes] from snnTorch's recorded output (``spk_rec``, ``mem_rec``: [T, N, classes], the
    time-major stacks its tutorials return): the spike count over time (``use="spikes"``, what their
    rate-coded accuracy reads) or the time mean of the output membrane (``use="membrane"``, what a
    membrane-based loss reads). Put it at the end of ``forward`` so spikeguard gets logits."""
    if use == "spikes":
        return spk_rec.sum(0)
    if use == "membrane":
        if mem_rec is None:
            raise ValueError("use='membrane' needs mem_rec")
        return mem_rec.mean(0)
    raise ValueError(f"use must be 'spikes' or 'membrane', got {use!r}")
