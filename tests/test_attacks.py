import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeguard.attacks import fgsm, pgd, worst_case_accuracy
from spikeguard.evaluation.bank import PAPER as PAPER_ESTIMATORS
from spikeguard.runtime import eval_mode


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.5), steps=st.integers(1, 4), seed=st.integers(0, 1000))
def test_adversarial_examples_stay_in_the_ball_and_the_box(tiny_model, digits_batch, eps, steps, seed):
    # the fixtures are only read, never changed, so sharing them across examples is safe
    x, y = digits_batch
    with eval_mode(tiny_model):
        for x_adv in (fgsm(tiny_model, x, y, eps),
                      pgd(tiny_model, x, y, eps, eps / 2 + 1e-3, steps, generator=torch.Generator().manual_seed(seed))):
            assert x_adv.min() >= 0 and x_adv.max() <= 1
            assert (x_adv - x).abs().max() <= eps + 1e-6


def test_pgd_with_more_steps_is_never_weaker_per_sample(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:120], y[:120]
    eps = 0.08
    with eval_mode(tiny_model):
        short = pgd(tiny_model, x, y, eps, 0.02, 3, generator=torch.Generator().manual_seed(0))
        long = pgd(tiny_model, x, y, eps, 0.02, 12, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            fooled_short = tiny_model(short).argmax(1) != y
            fooled_long = tiny_model(long).argmax(1) != y
    assert fooled_short.any()
    assert not (fooled_short & ~fooled_long).any()
    assert fooled_long.sum() >= fooled_short.sum()


def test_pgd_is_deterministic_given_its_generator(tiny_model, digits_batch):
    x, y = digits_batch
    with eval_mode(tiny_model):
        a = pgd(tiny_model, x, y, 0.1, 0.03, 3, generator=torch.Generator().manual_seed(5))
        b = pgd(tiny_model, x, y, 0.1, 0.03, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_ensemble_is_no_better_than_any_member(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:100], y[:100]

    def attack(model, xs, ys):
        return fgsm(model, xs, ys, 0.1)

    ensemble = worst_case_accuracy(tiny_model, x, y, attack, PAPER_ESTIMATORS)
    members = [worst_case_accuracy(tiny_model, x, y, attack, [name]) for name in PAPER_ESTIMATORS]
    for member in members:
        assert ensemble.accuracy <= member.accuracy
        assert not (ensemble.robust & ~member.robust).any()
    assert ensemble.accuracy < ensemble.clean_correct.float().mean().item()
    assert all(b in ("", "clean", *PAPER_ESTIMATORS) for b in ensemble.broken_by)
    assert sum(b == "" for b in ensemble.broken_by) == int(ensemble.robust.sum())


def test_attacks_leave_model_modes_and_estimators_as_they_were(tiny_model, digits_batch):
    from spikeguard.snn import spiking_layers

    x, y = digits_batch
    tiny_model.train()
    before = [layer.estimator for layer in spiking_layers(tiny_model)]
    worst_case_accuracy(tiny_model, x, y, lambda m, a, b: fgsm(m, a, b, 0.1), PAPER_ESTIMATORS)
    assert tiny_model.training and all(m.training for m in tiny_model.modules())
    assert [layer.estimator for layer in spiking_layers(tiny_model)] == before
