"""SpikingJelly 2.0 and snnTorch 1.0 models: the estimator bank reaches their neurons, their state is reset
everywhere spikeguard runs them, and the CLI and the Python API agree. Both libraries are installed by the
README's test command (no skip)."""

from __future__ import annotations

import pytest
import snntorch.surrogate as snn_surrogate
import spikingjelly.activation_based.surrogate as sj_surrogate
import torch
import torch.nn.functional as F
from ecosystem_models import JellyCSNN, TorchCSNN, reset, train

from spikeguard import adapters
from spikeguard.defenses import sparsity_penalty
from spikeguard.evaluation import bank

SURROGATE_MEMBERS = ("triangle:0.5", "triangle:1", "sigmoid:4", "atan:2", "exponential:0.5", "straight_through")


@pytest.fixture(scope="module")
def data(digits_tensors):
    (x, y), (xt, yt) = digits_tensors
    return x[:512], y[:512], xt[:48], yt[:48]


@pytest.fixture(scope="module")
def jelly(data):
    torch.manual_seed(0)
    return train(JellyCSNN(), data[0], data[1], epochs=2)


@pytest.fixture(scope="module")
def snn(data):
    torch.manual_seed(0)
    return train(TorchCSNN(), data[0], data[1], epochs=2)


def input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    reset(model)
    F.cross_entropy(model(x), y).backward()
    return x.grad


# ----------------------------------------------------------------- formulas equal the libraries' own

@pytest.mark.parametrize("ours,theirs", [
    ("sigmoid:4", lambda: sj_surrogate.Sigmoid(alpha=4.0)), ("atan:2", lambda: sj_surrogate.ATan(alpha=2.0)),
    ("atan:1", lambda: sj_surrogate.ATan(alpha=1.0)), ("exponential:0.5", lambda: sj_surrogate.PiecewiseExp(alpha=2.0)),
    ("triangle:0.5", lambda: sj_surrogate.PiecewiseQuadratic(alpha=2.0)),
])
def test_surrogates_match_spikingjelly(ours, theirs):
    v = torch.linspace(-2.3, 2.3, 461)
    _check_same_derivative(adapters.surrogate_for(ours, "spikingjelly"), theirs(), v)


@pytest.mark.parametrize("ours,theirs", [
    ("atan:2", lambda: snn_surrogate.atan(alpha=2.0)), ("sigmoid:25", lambda: snn_surrogate.sigmoid(slope=25)),
    ("straight_through", lambda: snn_surrogate.straight_through_estimator()),
    ("fast_sigmoid:25", lambda: snn_surrogate.fast_sigmoid(slope=25)),
])
def test_surrogates_match_snntorch(ours, theirs):
    v = torch.linspace(-2.3, 2.3, 461)
    _check_same_derivative(adapters.surrogate_for(ours, "snntorch"), theirs(), v)


def _check_same_derivative(mine, library, v):
    a, b = v.clone().requires_grad_(True), v.clone().requires_grad_(True)
    out_a, out_b = mine(a), library(b)
    assert torch.equal(out_a, out_b)  # the library's own forward convention
    out_a.sum().backward()
    out_b.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- the bank drives the neurons

@pytest.mark.parametrize("which", ["jelly", "snn"])
def test_every_member_changes_the_gradient_and_is_restored(which, request, data):
    model = request.getfixturevalue(which)
    x, y = data[2][:16], data[3][:16]
    native = input_grad(model, x, y)
    before = [getattr(n.module, n.attribute) for n in adapters.external_neurons(model)]
    with torch.no_grad():
        reset(model)
        clean = model(x)
    for member in (*SURROGATE_MEMBERS[:2], "bptr", "hart:0.5", "pdsg", "ann"):
        with bank.under(model, member) as target:
            grad = input_grad(target, x, y)
            with torch.no_grad():
                reset(model)
                assert torch.allclose(target(x), clean, atol=1e-5), member  # the forward pass is untouched
        assert not torch.allclose(grad, native), member
        assert grad.abs().sum() > 0, member
    assert [getattr(n.module, n.attribute) for n in adapters.external_neurons(model)] == before
    assert all("forward" not in n.module.__dict__ for n in adapters.external_neurons(model))
    torch.testing.assert_close(input_grad(model, x, y), native)


def test_coverage_lists_neurons_the_rules_cannot_drive():
    from spikingjelly.activation_based import neuron

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), neuron.IFNode(), torch.nn.Linear(4, 4), neuron.QIFNode())
    cover = adapters.coverage(net, ["triangle:1", "bptr"])
    assert cover["triangle:1"]["applied"] and not cover["triangle:1"]["not_applicable"]
    assert not cover["bptr"]["applied"] and "QIFNode" in cover["bptr"]["not_applicable"]


def test_single_step_jelly_model_is_driven_too(data):
    torch.manual_seed(0)
    model = JellyCSNN(neuron="LIFNode", step_mode="s").eval()
    x, y = data[2][:8], data[3][:8]
    native = input_grad(model, x, y)
    for member in ("sigmoid:1", "bptr", "hart:1", "ann"):
        with bank.under(model, member) as target:
            assert not torch.allclose(input_grad(target, x, y), native), member


# ----------------------------------------------------------------- state handled everywhere

@pytest.mark.parametrize("which", ["jelly", "snn"])
def test_the_mechanism_of_a_library_model_names_its_surrogate_and_what_it_cannot_measure(which, request, data):
    """A SpikingJelly / snnTorch model is analysed under its own surrogate: the decomposition holds, and the
    analysis says the other estimators and its layers' surrogate zeros are not measured, and why."""
    from spikeguard.analysis import AnalysisSettings, analyze_model
    from spikeguard.analysis.analyze import LIBRARY_SURROGATE, fallback_attacks

    model = request.getfixturevalue(which)
    summary, _ = analyze_model(model, data[2][:12], data[3][:12], AnalysisSettings(eps=(0.15,), draws=1,
                                                                                      bisect_steps=0),
                               *fallback_attacks(0)[:2])
    mech = summary["mechanism"]
    assert summary["gradient"]["estimator"] == mech["training_estimator"] == LIBRARY_SURROGATE
    assert list(mech["estimators"]) == [LIBRARY_SURROGATE] and "triangle:4" in mech["not_measured"]
    assert all(p["identity"]["violations"] == 0 for p in mech["estimators"][LIBRARY_SURROGATE].values())
    zeros = mech["surrogate_zeros"][LIBRARY_SURROGATE]
    assert zeros["layers"] == {} and zeros["unmeasured"] and summary["dead_surrogates"]["unmeasured"]


@pytest.mark.parametrize("which", ["jelly", "snn"])
def test_penalty_equals_the_penalty_with_explicit_resets(which, request, data):
    model = request.getfixturevalue(which)
    x, y = data[2][:16], data[3][:16]

    class Explicit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, inp):
            reset(self.m)
            return self.m(inp)

    with torch.no_grad():
        model(torch.rand_like(x))  # leave some state behind
    state = [dict(getattr(m, "_memories", {})) for m in model.modules()]
    ours = sparsity_penalty(model, x, y)
    assert [dict(getattr(m, "_memories", {})) for m in model.modules()] == state  # left as found
    expected = sparsity_penalty(Explicit(), x, y)
    torch.testing.assert_close(ours, expected)


def test_sr_training_steps_equal_hand_written_steps_with_resets(data):
    import copy

    from spikeguard.defenses.objectives import SparsityRegularization
    from spikeguard.defenses.sparsity import strongest_rival, true_class_probability

    torch.manual_seed(1)
    a = JellyCSNN().train()
    b = copy.deepcopy(a)
    x, y = data[0][:32], data[1][:32]
    defense = SparsityRegularization(lamb=0.1)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    for _ in range(2):
        loss, _ = defense.loss(a, x, y)
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()
        # by hand
        xg = x.clone().requires_grad_(True)
        reset(b)
        logits = b(xg)
        rival = strongest_rival(logits, y)
        f = true_class_probability(logits, y, rival)
        (g,) = torch.autograd.grad(f.sum(), xg, retain_graph=True)
        reset(b)
        f_step = true_class_probability(b(xg.detach() + 0.01 * g.sign()), y, rival)
        loss_b = F.cross_entropy(logits, y) + 0.1 * ((f_step - f) / 0.01).pow(2).mean()
        opt_b.zero_grad()
        loss_b.backward()
        opt_b.step()
        torch.testing.assert_close(loss, loss_b)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_a_distilled_student_and_its_teacher_may_both_be_library_networks(snn, data):
    """sr_distill with a snnTorch teacher and a SpikingJelly student: the loss equals the one written by hand
    with explicit resets, and the teacher's state is left as found (its passes are stateless too)."""
    import copy

    from spikeguard.defenses import create_defense
    from spikeguard.defenses.sparsity import sparsity_terms

    torch.manual_seed(2)
    student = JellyCSNN().train()
    x, y = data[0][:32], data[1][:32]
    teacher = copy.deepcopy(snn).eval()
    with torch.no_grad():
        teacher(torch.rand_like(x))  # leave some state behind
    state = [dict(getattr(m, "_memories", {})) for m in teacher.modules()]
    loss, parts = create_defense("sr_distill", lamb=0.1, teacher=teacher, kd_temperature=2.0,
                                 kd_alpha=0.7).loss(student, x, y)
    assert [dict(getattr(m, "_memories", {})) for m in teacher.modules()] == state
    reset(teacher)
    with torch.no_grad():
        soft = F.softmax(teacher(x) / 2.0, 1)
    logits, penalty = sparsity_terms(student, x, y, 0.01)  # resets the student itself (checked above for SR)
    kl = (soft * (soft.log() - F.log_softmax(logits / 2.0, 1))).sum(1).mean() * 4.0
    torch.testing.assert_close(loss, 0.3 * F.cross_entropy(logits, y) + 0.7 * kl + 0.1 * penalty)
    assert parts["kd"] > 0


def test_snntorch_logits_helper():
    spk, mem = torch.rand(4, 3, 10).round(), torch.randn(4, 3, 10)
    torch.testing.assert_close(adapters.snntorch_logits(spk, mem), spk.sum(0))
    torch.testing.assert_close(adapters.snntorch_logits(spk, mem, use="membrane"), mem.mean(0))


def test_rat_beta_renamed_and_old_configs_still_load():
    from spikeguard.config import config_from_dict
    from spikeguard.errors import UserError

    assert config_from_dict({"defense": "rat", "beta": 0.01}).rat_beta == 0.01  # an old config.yaml
    assert config_from_dict({"defense": "rat", "rat_beta": 0.02}).rat_beta == 0.02
    with pytest.raises(UserError, match="old name"):
        config_from_dict({"beta": 0.01, "rat_beta": 0.02})


# ----------------------------------------------------------------- registered rules reach library neurons

@pytest.mark.parametrize("which", ["jelly", "snn"])
def test_user_registered_rules_drive_library_neurons(which, request, data):
    from spikeguard.snn.estimators import RateEstimator, rectangular
    from spikeguard.snn.registry import register_estimator, unregister_estimator

    model = request.getfixturevalue(which)
    x, y = data[2][:8], data[3][:8]
    seen = []

    class Box:  # a surrogate-kind rule object without a ``shape``: only its derivative is used
        def derivative(self, estimator, v, sigma=None):
            return rectangular(v, estimator.width)

        def fire(self, estimator, neuron, currents):
            raise AssertionError("library neurons use the derivative of a surrogate rule")

    class CountingRate(RateEstimator):  # a user's rate rule: gets the library neuron through its fire()
        def fire(self, estimator, neuron, currents):
            seen.append(type(neuron).__name__)
            return super().fire(estimator, neuron, currents)

    register_estimator("box_test", Box, default_width=1.0)
    register_estimator("rate_test", CountingRate, kind="rate")
    try:
        for mine, builtin in (("box_test:1", "rectangular:1"), ("rate_test", "bptr")):
            with bank.under(model, mine) as target:
                g_mine = input_grad(target, x, y)
            with bank.under(model, builtin) as target:
                g_builtin = input_grad(target, x, y)
            torch.testing.assert_close(g_mine, g_builtin)
            assert g_mine.abs().sum() > 0
        assert seen and set(seen) == {"LibraryNeuron"}
    finally:
        unregister_estimator("box_test")
        unregister_estimator("rate_test")


def test_same_rule_same_gradient_on_spikeguard_spikingjelly_and_snntorch_neurons():
    """One integrate-and-fire layer (threshold 1, reset to 0 with the reset detached) written in each
    library: every rule, run on each library's own neuron, gives spikeguard's input gradient."""
    import snntorch
    from spikingjelly.activation_based import neuron as sj_neuron

    from spikeguard.snn import IFNeuron

    steps, torch_gen = 4, torch.Generator().manual_seed(0)
    first, readout = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)
    with torch.no_grad():
        first.weight.copy_(torch.randn(8, 6, generator=torch_gen) * 0.8)

    class Net(torch.nn.Module):
        def __init__(self, spiking, multi_step):
            super().__init__()
            self.first, self.spiking, self.readout, self.multi_step = first, spiking, readout, multi_step

        def forward(self, x):
            if self.multi_step is None:  # spikeguard: time folded into the batch, time-major
                spikes = self.spiking(self.first(x.repeat(steps, 1))).reshape(steps, len(x), -1)
            elif self.multi_step:
                spikes = self.spiking(self.first(x).unsqueeze(0).repeat(steps, 1, 1))
            else:
                spikes = torch.stack([self.spiking(self.first(x)) for _ in range(steps)])
            return self.readout(spikes.mean(0))

    ours = Net(IFNeuron(tau=1.0, threshold=1.0, time_steps=steps, detach_reset=True), None)
    jelly = Net(sj_neuron.IFNode(v_threshold=1.0, v_reset=0.0, detach_reset=True, step_mode="m"), True)
    snn = Net(snntorch.Leaky(beta=1.0, threshold=1.0, reset_mechanism="zero", init_hidden=True), False)
    x, y = torch.randn(16, 6, generator=torch_gen) + 0.5, torch.randint(0, 3, (16,), generator=torch_gen)
    for member in ("sigmoid:4", "bptr", "hart:0.5", "pdsg", "ann"):
        grads = []
        for model in (ours, jelly, snn):
            with bank.under(model, member) as target:
                grads.append(input_grad(target, x, y))
        assert grads[0].abs().sum() > 0, member
        torch.testing.assert_close(grads[1], grads[0], msg=member)
        torch.testing.assert_close(grads[2], grads[0], msg=member)
