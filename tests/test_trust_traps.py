"""Issue 21: models that keep their decisions but hide them from the gradient (tests/traps.py). The forward/
backward agreement probe tells an honest SNN from a lying one, and the escalation's substitutes are independent
of the target, so a wrapper's trick does not travel with them; the escalated number comes within 5 points of
the attack that knows the trick."""

import pytest
import torch
import traps

from spikeguard.evaluation import bank, evaluate_model
from spikeguard.evaluation.agreement import DISAGREEMENT_THRESHOLD, probe_agreement
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.schema import FlagName

EPS = 0.15
MEMBERS = ("triangle:1", "atan:2", "bptr", "ann")


def _agreement(model, x, y, members=MEMBERS) -> dict:
    twins: dict = {}
    return probe_agreement(model, x, y, EPS, members, lambda member: bank.under(model, member, twins))


def test_the_agreement_probe_tells_honest_from_lying_backward_passes(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:64], y[:64]
    honest = _agreement(tiny_model, x, y)
    assert honest["probed"] >= 50 and honest["fraction"] <= DISAGREEMENT_THRESHOLD / 2
    assert list(honest["members"]) == ["triangle:1"]  # the first member agreed: no other was asked
    flipped = traps.FlippedWrapper(tiny_model)
    lying = _agreement(flipped, x, y)
    assert lying["fraction"] >= 2 * DISAGREEMENT_THRESHOLD and list(lying["members"]) == list(MEMBERS), lying
    # many members must not let chance agreement accumulate (the strong suite's bank: 25 of them)
    assert _agreement(flipped, x, y, bank.BANK)["fraction"] >= 2 * DISAGREEMENT_THRESHOLD
    # a hard-label output does not move under small steps away from its boundary: those samples say nothing
    # (the flat-outputs probe's business), they are not counted as agreeing
    flat = _agreement(traps.FlatLiar(tiny_model), x, y)
    assert all(m["counted"] <= flat["probed"] / 2 for m in flat["members"].values())
    # a model whose surrogates are dead under the first member but alive under another is not a liar
    dead = _agreement(traps.dead_zone(tiny_model), x, y)
    assert dead["fraction"] <= DISAGREEMENT_THRESHOLD and dead["members"]["triangle:1"]["fraction"] is None


def test_the_probe_counts_a_zero_gradient_as_silent_not_as_disagreeing(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors

    class Frozen(torch.nn.Module):  # the base's outputs, no gradient at all
        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, x):
            return self.base(x.detach())

    result = _agreement(Frozen(tiny_model), x[:32], y[:32])
    assert result["best_member"] is None and result["fraction"] == 0.0
    assert all(m["gradient_zero"] == result["probed"] > 0 for m in result["members"].values())


SUITE = suite_from_dict({"name": "traps", "attacks": [{"attack": "fgsm", "estimators": ["triangle:1"]},
                                      {"attack": "pgd", "steps": 10, "estimators": ["triangle:1", "ann"]},
                                      {"attack": "square", "queries": 50, "survivors_only": True}],
         "checks": {"unbounded_n": 8, "unbounded_steps": 5},
         "escalation": {"substitute_epochs": 3, "substitute_queries": 500, "transfer_steps": 10, "estimate_steps": 50,
                        "estimate_directions": 64, "estimate_sigma": 1.0, "square_queries": 100,
                        "square_restarts": 1, "decision_queries": 0}})


@pytest.fixture(scope="module")
def wrapped_evaluation(_trained_tiny, digits):
    """The escalation on a wrapper whose flipped gradient a copy of the target would inherit."""
    return evaluate_model(traps.FlippedWrapper(_trained_tiny), digits.test, 10, suite=SUITE, eps=EPS, n=32,
                          batch_size=32, progress=False, train=digits.train)


def test_a_lying_wrapper_is_flagged_and_escalated_to_near_the_trick_aware_attack(wrapped_evaluation, _trained_tiny,
                                                                                 digits_tensors):
    record = wrapped_evaluation.record
    assert FlagName.BACKWARD_DISAGREES in record.flag_names
    assert record.probes.agreement["fraction"] >= 2 * DISAGREEMENT_THRESHOLD
    assert record.headline.label == "not a bound" and record.escalation is not None
    _, (x, y) = digits_tensors
    aware = traps.trick_aware(_trained_tiny, x[:32], y[:32], EPS, steps=50).float().mean().item()
    assert record.headline.accuracy <= aware + 0.05, (record.headline.accuracy, aware)
    assert record.ensemble_accuracy_before_escalation > aware + 0.05  # the trap did fool the suite


def test_the_substitutes_never_run_the_targets_code(wrapped_evaluation):
    substitutes = wrapped_evaluation.record.escalation.substitute
    assert set(substitutes) == {"distilled", "labels"}
    assert all(facts["architecture"].startswith("SmallCNN") for facts in substitutes.values())
    assert substitutes["distilled"]["queries"] > 0 and substitutes["labels"]["queries"] == 0
    # which substitute broke what: the counts add up to the transfer column's breaks
    rows = wrapped_evaluation.samples
    broken = sum(r.attacks["escalation-transfer"].broken_by.endswith(("from distilled", "from labels")) for r in rows)
    assert broken == sum(facts["broke"] for facts in substitutes.values())
    headline = " ".join(wrapped_evaluation.record.headline.tried)
    assert "substitute 'distilled'" in headline and "substitute 'labels'" in headline


def test_an_honest_snn_raises_no_agreement_flag(tiny_model, digits):
    record = evaluate_model(tiny_model, digits.test, 10, suite=SUITE, eps=EPS, n=32, batch_size=32,
                            progress=False).record
    assert FlagName.BACKWARD_DISAGREES not in record.flag_names
    assert record.probes.agreement["probed"] > 20 and record.probes.agreement["fraction"] <= DISAGREEMENT_THRESHOLD
