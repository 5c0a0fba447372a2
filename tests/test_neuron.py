import pytest
import torch

from spikeguard.errors import UserError
from spikeguard.models import ann_twin
from spikeguard.snn import IFNeuron, PoissonEncoder, estimator, spiking_layers


def test_integrate_and_fire_dynamics_by_hand():
    # T = 4, one neuron: currents 0.6 each step -> u: 0.6, 1.2 (spike, reset 0), 0.6, 1.2 (spike)
    n = IFNeuron(time_steps=4)
    out = n(torch.full((4, 1), 0.6))
    assert out.squeeze(1).tolist() == [0.0, 1.0, 0.0, 1.0]
    # leak 0.5, currents 0.6: u = 0.6, 0.9, 1.05 (spike), 0.6
    leaky = IFNeuron(tau=0.5, time_steps=4)
    assert leaky(torch.full((4, 1), 0.6)).squeeze(1).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_estimator_switch_restores_previous(tiny_model):
    before = [layer.estimator for layer in spiking_layers(tiny_model)]
    with estimator(tiny_model, "sigmoid", alpha=4.0) as est:
        assert est.name == "sigmoid:4"
        assert all(layer.estimator.name == "sigmoid:4" for layer in spiking_layers(tiny_model))
    assert [layer.estimator for layer in spiking_layers(tiny_model)] == before


def test_estimator_switch_restores_after_exception(tiny_model):
    before = [layer.estimator for layer in spiking_layers(tiny_model)]
    with pytest.raises(RuntimeError):
        with estimator(tiny_model, "bptr"):
            assert spiking_layers(tiny_model)[0].estimator.name == "bptr"
            raise RuntimeError("boom")
    assert [layer.estimator for layer in spiking_layers(tiny_model)] == before


def test_estimator_switch_rejects_bad_parameters(tiny_model):
    with pytest.raises(UserError):
        with estimator(tiny_model, "sigmoid", beta=2.0):
            pass
    with pytest.raises(UserError):
        with estimator(tiny_model, "sigmoid", alpha=2.0, gamma=1.0):
            pass


def test_estimator_changes_gradient_not_forward(tiny_model, digits_batch):
    x, y = digits_batch
    tiny_model.eval()
    grads, outs = [], []
    for name in ("triangle:1", "sigmoid:4", "bptr"):
        with estimator(tiny_model, name):
            xi = x.clone().requires_grad_(True)
            out = tiny_model(xi)
            torch.nn.functional.cross_entropy(out, y).backward()
        grads.append(xi.grad)
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert not torch.allclose(grads[0], grads[1]) and not torch.allclose(grads[0], grads[2])


def test_no_state_leak_between_forward_calls(tiny_model, digits_batch):
    x, _ = digits_batch
    tiny_model.eval()
    with torch.no_grad():
        first = tiny_model(x)
        tiny_model(torch.rand_like(x) * 5)  # a very different input in between
        again = tiny_model(x)
        single = tiny_model(x[:3])
    assert torch.equal(first, again)
    torch.testing.assert_close(single, first[:3])


def test_ann_twin_shares_weights_and_uses_relu(tiny_model, digits_batch):
    x, _ = digits_batch
    twin = ann_twin(tiny_model)
    assert twin.body[0].weight is tiny_model.body[0].weight
    assert all(not layer.spiking and layer.time_steps == 1 for layer in spiking_layers(twin))
    assert all(layer.spiking for layer in spiking_layers(tiny_model))
    twin.eval()
    with torch.no_grad():
        hidden = twin.body[:3](twin.encoder(x))
        assert hidden.min() >= 0 and not torch.all((hidden == 0) | (hidden == 1))  # ReLU, not spikes
        tiny_model.body[0].weight.mul_(2)  # an update to the SNN reaches the twin
        assert torch.equal(twin.body[0].weight, tiny_model.body[0].weight)


def test_poisson_encoder_is_stochastic_with_straight_through_gradient():
    torch.manual_seed(0)
    enc = PoissonEncoder(time_steps=200)
    x = torch.tensor([[[[0.0, 0.25], [0.75, 1.0]]]], requires_grad=True)
    out = enc(x)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out.detach().mean(0, keepdim=True), x.detach(), atol=0.08, rtol=0)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 200.0))


def test_neuron_rejects_bad_settings():
    with pytest.raises(UserError):
        IFNeuron(tau=1.5)
    with pytest.raises(UserError):
        IFNeuron(threshold=0)
