import sys
import uuid

import pytest
import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.external import (
    StatefulSNNAdapter,
    load_external,
    load_model_fn,
    wrap_external,
)
from spikeguard.snn import IFNeuron

T = 4


class StickyNeuron(nn.Module):
    """Behaves like a SpikingJelly / snnTorch neuron: the membrane survives between calls unless reset."""

    def __init__(self):
        super().__init__()
        self.v = 0.0

    def reset(self):
        self.v = 0.0

    def forward(self, x):
        self.v = 0.9 * self.v + x
        s = (self.v >= 1).float() + (self.v - self.v.detach())  # spikes forward, identity gradient
        self.v = self.v * (1 - s.detach())
        return s


class StepLoopNet(nn.Module):
    """Single-step neurons, T steps of direct input per forward pass, logits averaged over time."""

    def __init__(self, neuron: nn.Module):
        super().__init__()
        self.fc1, self.neuron, self.fc2 = nn.Linear(6, 16), nn.Sequential(neuron), nn.Linear(16, 3)

    def forward(self, x):
        return torch.stack([self.fc2(self.neuron(self.fc1(x))) for _ in range(T)]).mean(0)


def make(neuron: nn.Module) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = StepLoopNet(neuron)
        net.fc1.weight.data.mul_(3)
    return net.eval()


@pytest.fixture
def x():
    return torch.rand(5, 6, generator=torch.Generator().manual_seed(1))


def leaks(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the output for x depends on what the model saw before: x again, or another input."""
    other = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) * 4 - 1
    with torch.no_grad():
        first, again = model(x), model(x)
        model(other)
        return not (torch.equal(again, first) and torch.equal(model(x), first))


def test_stateful_model_leaks_without_adapter_and_not_with_it(x):
    net = make(StickyNeuron())
    assert leaks(net, x)
    wrapped = StatefulSNNAdapter(net, lambda m: m.neuron[0].reset())
    with torch.no_grad():
        fresh = make(StickyNeuron())(x)
    assert not leaks(wrapped, x)
    with torch.no_grad():
        assert torch.equal(wrapped(x), fresh)


def test_adapter_gradients_repeat_across_attack_iterations(x):
    wrapped = StatefulSNNAdapter(make(StickyNeuron()), lambda m: m.neuron[0].reset())
    grads = []
    for _ in range(2):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(wrapped(xi).sum(), xi)
        grads.append(g)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


def _pretend_from(framework_module: str) -> type:
    base = type("LibraryBase", (nn.Module,), {})
    base.__module__ = framework_module  # what wrap_external reads to recognise a library's neuron
    return base


JellyLike = type("JellyLike", (StickyNeuron, _pretend_from("spikingjelly.activation_based.base")), {})


class TorchLike(StickyNeuron, _pretend_from("snntorch._neurons.neurons")):
    init_hidden = True

    def reset(self):
        raise AssertionError("snnTorch neurons are reset through reset_mem")

    def reset_mem(self):
        self.v = 0.0


class OldTorchLike(StickyNeuron, _pretend_from("snntorch._neurons.neurons")):
    init_hidden = True


@pytest.mark.parametrize("neuron", [JellyLike, TorchLike])
def test_wrap_external_detects_library_neurons_by_class(x, neuron):
    net = make(neuron())
    assert leaks(net, x)
    wrapped = wrap_external(net)
    assert isinstance(wrapped, StatefulSNNAdapter) and wrapped.model is net
    assert not leaks(wrapped, x)
    assert wrap_external(wrapped) is wrapped


def test_spikingjelly_reset_without_its_functional_module(x, monkeypatch):
    # an install where reset_net cannot be imported falls back to each module's own reset()
    monkeypatch.setitem(sys.modules, "spikingjelly.activation_based.functional", None)
    wrapped = wrap_external(make(JellyLike()))
    assert not leaks(wrapped, x)


def test_wrap_external_leaves_other_models_alone():
    own = nn.Sequential(nn.Linear(6, 3), IFNeuron(time_steps=1))  # spikeguard's neurons keep no state
    assert wrap_external(own) is own
    assert wrap_external(make(StickyNeuron())).__class__ is StepLoopNet  # unknown library: not guessed


def test_wrap_external_refuses_snntorch_neurons_it_cannot_reset():
    with pytest.raises(UserError, match="reset_mem"):
        wrap_external(make(OldTorchLike()))


def test_real_spikingjelly_model_is_reset(x):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    net = make(neuron.LIFNode(tau=2.0))
    assert leaks(net, x)
    wrapped = wrap_external(net)
    assert isinstance(wrapped, StatefulSNNAdapter) and not leaks(wrapped, x)
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(wrapped(xi), torch.zeros(5, dtype=torch.long)), xi)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_real_snntorch_model_is_reset_also_when_nested(x):
    snn = pytest.importorskip("snntorch")
    net = make(snn.Leaky(beta=0.9, init_hidden=True))  # nested in a Sequential: snntorch.utils.reset misses it
    assert leaks(net, x)
    wrapped = wrap_external(net)
    assert isinstance(wrapped, StatefulSNNAdapter) and not leaks(wrapped, x)
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(wrapped(xi).sum(), xi)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Writes a module into a fresh current directory and returns its (unique) name."""
    monkeypatch.chdir(tmp_path)
    name = f"sg_user_{uuid.uuid4().hex[:8]}"

    def write(source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    yield write
    sys.modules.pop(name, None)


GOOD = """
import torch
def build():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
def nothing():
    return 42
VALUE = 3
"""


def test_load_model_fn_imports_from_current_directory(user_module):
    path_before = list(sys.path)
    name = user_module(GOOD)
    model = load_model_fn(f"{name}:build")
    assert isinstance(model, nn.Sequential) and not model.training
    assert sys.path == path_before
    assert isinstance(load_external(f"{name}:build"), nn.Sequential)


@pytest.mark.parametrize("suffix,source,message", [
    (":build", None, "must look like package.module:function"),
    ("", None, "must look like package.module:function"),
    (":", GOOD, "must look like package.module:function"),
    (":build", "raise ValueError('broken setup\\nsecond line')", "ValueError: broken setup"),
    (":missing", GOOD, "no attribute 'missing'"),
    (":VALUE", GOOD, "is not callable (type int)"),
    (":nothing", GOOD, "returned int, not a torch.nn.Module"),
    (":build", "def build():\n    raise RuntimeError('no weights')", "RuntimeError: no weights"),
])
def test_load_model_fn_errors_are_one_clear_line(user_module, suffix, source, message):
    if source is None:  # no colon at all, or an empty module part
        spec = "nocolon" if suffix == "" else suffix
    else:
        spec = user_module(source) + suffix
    with pytest.raises(UserError) as error:
        load_model_fn(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_load_model_fn_missing_module_names_the_error():
    with pytest.raises(UserError, match="ModuleNotFoundError"):
        load_model_fn("no_such_package_sg.models:build")
