"""Attack objects (spikeguard.attacks.PGD, ...): one per attack kind of the registry, each run on a
spikeguard, a SpikingJelly and an snnTorch model (tiny, digits): examples inside the ball, the model's
mode, estimator and neuron state as found, and the estimator actually used."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_spec
from ecosystem_models import JellyCSNN, TorchCSNN, reset

import spikeguard.attacks as attacks
from spikeguard.attacks.registry import ATTACKS, attack_class_names
from spikeguard.errors import UserError
from spikeguard.models import create_model

EPS = 0.1
# each kind's cheapest settings (the registry's parameters; a new kind without an entry runs its defaults)
CHEAP = {"pgd": {"steps": 2}, "apgd-ce": {"steps": 2}, "apgd-dlr": {"steps": 2}, "apgd-t": {"steps": 2},
         "fab-t": {"steps": 2}, "square": {"queries": 5}, "random-uniform": {"draws": 2}, "random-sign": {"draws": 2},
         "nes-pgd": {"steps": 1, "directions": 2}, "sparse-events": {"steps": 1, "budget": 4},
         "random-events": {"draws": 2, "budget": 4}, "rays": {"queries": 20}}


class Frames(torch.nn.Module):
    """Event frames [N, T, 2, 8, 8] -> an image model (for the event attacks)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.mean((1, 2)).unsqueeze(1))


def models():
    torch.manual_seed(0)
    return {"spikeguard": create_model(tiny_spec()), "spikingjelly": JellyCSNN(), "snntorch": TorchCSNN()}


@pytest.fixture(scope="module")
def batch(digits_tensors):
    _, (x, y) = digits_tensors
    return x[:4], y[:4]


def test_one_class_per_registered_kind_and_a_new_kind_gets_one():
    names = attack_class_names()
    assert set(names.values()) == set(ATTACKS.names(in_suites=True))
    assert {"PGD", "FGSM", "AutoAttack", "Square"} <= set(names) and set(names) <= set(dir(attacks))
    seen = []
    attacks.registry.register_attack("probe-test", lambda m, x, y, call: seen.append(call.params) or x.clone(),
                                     params={"k": 1})
    try:
        x = torch.rand(2, 3)
        out = attacks.ProbeTest(torch.nn.Linear(3, 2), eps=0.1, k=5)(x, torch.zeros(2))
        assert torch.equal(out, x) and seen == [{"k": 5}]
    finally:
        ATTACKS.unregister("probe-test")


@pytest.mark.parametrize("kind", sorted(ATTACKS.names(in_suites=True)))
def test_every_attack_class_on_every_kind_of_model(kind, batch):
    x, y = batch
    cls = attacks.attack_class(kind)
    entry = ATTACKS.get(kind)
    events = entry.norms == ("events",)
    for library, model in models().items():
        model.train()
        target = Frames(model) if events else model
        inputs = (x[:, None].expand(-1, 2, 2, -1, -1) * 4).round() / 4 if events else x
        extra = {"frame_range": 4} if events else {}
        attack = cls(target, eps=EPS, seed=1, **CHEAP.get(kind, {}), **extra)
        labels = y
        if kind == "autoattack":  # its 100-step stages are slow on a CPU: misclassified samples it skips
            with torch.no_grad():
                reset(model)
                labels = (model.eval()(x).argmax(1) + 1) % 10
            model.train()
        x_adv = attack(inputs, labels)
        assert x_adv.shape == inputs.shape, (kind, library)
        if not events:
            assert (x_adv - inputs).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
        assert all(m.training for m in model.modules()), (kind, library)  # the caller's mode back


@pytest.mark.parametrize("library", ["spikeguard", "spikingjelly", "snntorch"])
def test_pgd_uses_the_estimator_and_restores_everything(library, batch, tiny_model, digits_tensors):
    from ecosystem_models import train

    from spikeguard.snn import spiking_layers

    x, y = batch
    (xt, yt), _ = digits_tensors
    model = tiny_model if library == "spikeguard" else train(models()[library], xt[:256], yt[:256], epochs=1)
    layers = spiking_layers(model)
    before = [layer.estimator for layer in layers]
    torch.manual_seed(3)
    with torch.no_grad():
        reset(model)
        y = model(x).argmax(1)  # every sample correct: the attack has to move
        model(torch.rand_like(x))  # leave some neuron state behind
    state = [dict(getattr(m, "_memories", {})) for m in model.modules()]
    one = attacks.PGD(model, eps=EPS, steps=3, alpha=0.5, estimator="sigmoid:4", seed=0)(x, y)
    assert [layer.estimator for layer in layers] == before
    assert [dict(getattr(m, "_memories", {})) for m in model.modules()] == state
    again = attacks.PGD(model, eps=EPS, steps=3, step_size=0.05, estimator="sigmoid:4", seed=0)(x, y)
    torch.testing.assert_close(one, again)  # alpha 0.5 of eps 0.1 == an absolute step of 0.05
    other = attacks.PGD(model, eps=EPS, steps=3, alpha=0.5, estimator="ann", seed=0)(x, y)
    assert not torch.equal(one, other)  # the estimator reaches the neurons
    assert not model.training


def test_attack_objects_refuse_bad_settings_in_one_line():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(UserError, match="unknown parameter"):
        attacks.PGD(model, eps=0.1, stepz=3)
    with pytest.raises(UserError, match="not both"):
        attacks.PGD(model, eps=0.1, alpha=0.25, step_size=0.01)
    with pytest.raises(UserError, match="takes no estimator"):
        attacks.Square(model, eps=0.1, estimator="triangle:1")
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        attacks.FGSM(model, eps=0.1)(torch.full((2, 3), 2.0), torch.zeros(2))
