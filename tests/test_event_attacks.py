"""Threat models for event frames: frames-linf (the l-inf suites on [N, T, 2, S, S]) and events-l0 (whole
events added or removed within a budget): budgets, the random baseline, results records, bad input."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from evaluation_calls import evaluate, run_suite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeguard.attacks.events import random_events, sparse_events, within_event_budget
from spikeguard.attacks.noise import NOISES
from spikeguard.errors import UserError
from spikeguard.evaluation import bank, load_suite
from spikeguard.evaluation.runner import craft
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.evaluation.threat_models import make_threat_model, threat_from_record
from spikeguard.models import ModelSpec, create_model
from spikeguard.runtime import eval_mode

R, T, S, CLASSES = 8, 3, 8, 4


def event_frames(n: int, seed: int, frame_range: int = R) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, T, 2, S, S] frames min(count, R) / R: Poisson background events, a class-specific quadrant of
    extra ON and OFF events, and about 2% saturated bins (true count above R)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    rate = torch.full((n, T, 2, S, S), 0.4)
    for k in range(CLASSES):
        r0, c0 = (k // 2) * 4, (k % 2) * 4
        rate[y == k, :, 1, r0:r0 + 4, c0:c0 + 4] += 1.5
        rate[y == k, :, 0, 4 - r0:8 - r0, 4 - c0:8 - c0] += 1.0
    counts = torch.poisson(rate * frame_range / R, generator=g)
    counts[torch.rand(counts.shape, generator=g) < 0.02] = frame_range + 3
    return counts.clamp(max=frame_range) / frame_range, y


def frames_model() -> torch.nn.Module:
    return create_model(ModelSpec("digits_cnn", num_classes=CLASSES, in_channels=2, image_size=S, mean=(0.0, 0.0),
                                  std=(1.0, 1.0), time_steps=T, encoder="frames"))


@pytest.fixture(scope="module")
def trained():
    """A tiny frames SNN trained two epochs on 512 synthetic event samples (all test samples right)."""
    x, y = event_frames(512, 0)
    torch.manual_seed(0)
    model = frames_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(2):
        for i in range(0, len(y), 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(1)
    return frames_model().eval()


@pytest.fixture(scope="module")
def test_set():
    x, y = event_frames(48, 1)
    return list(zip(x, y.tolist()))


def assert_event_budget(x_adv, x, budget, frame_range):
    """The events-l0 constraints, checked independently of the attack code's own guard."""
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    steps = (x_adv - x) * frame_range
    assert torch.allclose(steps, steps.round(), atol=1e-4), "not whole events"
    counts = (x * frame_range).round() + steps.round()
    assert counts.min() >= 0 and counts.max() <= frame_range
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv[x == 1.0], x[x == 1.0]), "a saturated bin was edited"
    assert (steps.round().abs().flatten(1).sum(1) <= budget).all()
    return steps.round().abs().flatten(1).sum(1)


# --- events-l0: budgets ---------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), frame_range=st.integers(1, 12), budget=st.integers(1, 60),
       steps=st.integers(1, 6), member=st.sampled_from(["triangle:1", "hart:0.25", "ann"]))
def test_sparse_attack_stays_within_the_event_budget(untrained, trained, seed, frame_range, budget, steps, member):
    x, y = event_frames(8, seed, frame_range)
    for model in (untrained, trained):
        with eval_mode(model), bank.under(model, member) as target:
            x_adv = sparse_events(target, x, y, budget, frame_range, steps)
        assert_event_budget(x_adv, x, budget, frame_range)
        with torch.no_grad():
            already = model(x).argmax(1) != y
        assert torch.equal(x_adv[already], x[already]), "a misclassified sample was still attacked"


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), frame_range=st.integers(1, 12), budget=st.integers(1, 2000))
def test_random_events_spend_the_budget_on_feasible_edits(seed, frame_range, budget):
    x, _ = event_frames(8, seed, frame_range)
    x_adv = random_events(x, budget, frame_range, torch.Generator().manual_seed(seed))
    spent = assert_event_budget(x_adv, x, budget, frame_range)
    editable = (x < 1.0).flatten(1).sum(1)  # every unsaturated bin can take one event in or out
    assert torch.equal(spent, torch.minimum(editable, torch.tensor(budget)).to(spent.dtype))
    assert torch.equal(x_adv, random_events(x, budget, frame_range, torch.Generator().manual_seed(seed)))


def test_the_guard_refuses_what_events_l0_forbids():
    x, _ = event_frames(4, 0)
    ok = within_event_budget(x, x, 1, R)
    assert torch.equal(ok, x)
    free = (x < 1.0) & (x > 0)
    over = x.clone()
    over[free.nonzero()[:2].unbind(1)] -= 1 / R  # two events removed from sample 0 with a budget of 1
    fractional, saturated = x.clone(), x.clone()
    fractional[free] += 0.5 / R
    saturated[x == 1.0] -= 1 / R
    for bad in (over, fractional, saturated):
        with pytest.raises(RuntimeError, match="events-l0"):
            within_event_budget(bad, x, 1, R)
    with pytest.raises(UserError, match="frame range"):
        sparse_events(lambda v: v, x, torch.zeros(4, dtype=torch.long), 4, R + 1)


def test_sparse_attack_beats_random_events_and_is_never_weaker_than_none(trained):
    x, y = event_frames(64, 2)
    budget = 32
    with eval_mode(trained):
        x_adv = sparse_events(trained, x, y, budget, R, steps=10)
    x_rand = random_events(x, budget, R, torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean, adv, rand = (trained(v) for v in (x, x_adv, x_rand))
    assert (clean.argmax(1) == y).float().mean() > 0.9
    loss_clean = F.cross_entropy(clean, y, reduction="none")
    loss_adv = F.cross_entropy(adv, y, reduction="none")
    assert ((loss_adv >= loss_clean - 1e-6) | (adv.argmax(1) != y)).all()
    broken_adv = int((adv.argmax(1) != y).sum())
    broken_rand = int((rand.argmax(1) != y).sum())
    assert broken_adv >= 10 and broken_adv > broken_rand + 8, (broken_adv, broken_rand)
    with eval_mode(trained):  # deterministic: --verify and distributed runs reproduce it
        assert torch.equal(x_adv, sparse_events(trained, x, y, budget, R, steps=10))
        unbounded = sparse_events(trained, x, y, None, R, steps=2 * R)
        assert (trained(unbounded).argmax(1) != y).all()


# --- frames-linf: every quick and strong attack on a 5-D batch -----------------------------------------

def _shrunk(spec):
    small = {"steps": 3, "queries": 20, "draws": 2, "restarts": 1}
    return dataclasses.replace(spec, params={k: small.get(k, v) for k, v in spec.params.items()})


@pytest.mark.parametrize("spec", [s for name in ("quick", "strong") for s in load_suite(name).attacks],
                         ids=lambda s: s.label)
def test_frames_linf_attacks_stay_in_the_ball_and_the_box(trained, spec):
    x, y = event_frames(8, 3)
    eps = 0.25  # two events per bin at R = 8
    spec = _shrunk(spec)
    generator = torch.Generator().manual_seed(0)
    outputs = []
    if spec.attack in NOISES:
        outputs.append(NOISES[spec.attack](x, eps, generator))
    for member in [m for m in spec.estimators if m in ("triangle:1", "hart:0.25", "ann")][:2] or [""]:
        with eval_mode(trained), (bank.under(trained, member) if member else eval_mode(trained)) as target:
            if spec.attack not in NOISES:
                outputs.append(craft(spec, target, x, y, eps, 1, generator, CLASSES))
    for x_adv in outputs:
        assert x_adv.shape == x.shape
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= eps + 1e-6
    if spec.attack in ("pgd", "apgd-ce"):  # a real attack on frames, not an identity
        with torch.no_grad():
            assert (trained(outputs[-1]).argmax(1) != y).any()


# --- evaluations and their records ----------------------------------------------------------------------

FAST_EVENTS = {"name": "fast-events", "eot_draws": 2, "checks": {"unbounded_n": 8, "unbounded_steps": 8},
               "attacks": [{"attack": "sparse-events", "steps": 8, "estimators": ["triangle:1", "ann"]},
                           {"attack": "sparse-events", "label": "sparse-4", "steps": 4, "budget": 4,
                            "estimators": ["hart:0.25"]},
                           {"attack": "random-events", "draws": 2}]}
FAST_LINF = {"name": "fast-linf", "checks": {"unbounded_n": 8, "unbounded_steps": 5},
             # the escalation (when a flag fires) at a test's size
             "escalation": {"decision_queries": 50, "substitute_epochs": 2, "substitute_queries": 200, "transfer_steps": 5,
                            "estimate_steps": 5, "estimate_directions": 8, "square_queries": 50, "square_restarts": 1},
             "attacks": [{"attack": "fgsm", "estimators": ["triangle:1"]},
                         {"attack": "pgd", "steps": 5, "estimators": ["triangle:1", "ann"]},
                         {"attack": "square", "queries": 20}]}


def test_events_l0_evaluation_records_the_threat_model_and_budgets(trained, test_set):
    results, rows = evaluate(trained, test_set, suite_from_dict(FAST_EVENTS), 0.0, num_classes=CLASSES, n=16,
                             batch_size=8, progress=False, threat_model="events-l0", event_budget=24, frame_range=R)
    threat = results["threat_model"]
    assert threat["name"] == "events-l0" and threat["budget"] == 24 and threat["frame_range"] == R
    assert "1/R" in threat["meaning"] and threat["not_covered"]
    assert threat_from_record(threat) == make_threat_model("events-l0", budget=24, frame_range=R)
    attacks = {a["name"]: a for a in results["attacks"]}
    assert attacks["sparse-events"]["budget"] == 24 and attacks["sparse-4"]["budget"] == 4
    assert attacks["random-events"]["budget"] == 24 and attacks["sparse-events"]["eps"] is None
    assert attacks["sparse-events"]["accuracy"] < attacks["random-events"]["accuracy"]
    assert results["unbounded_accuracy"] == 0.0 and "no budget" in results["unbounded_check"]["attack"]
    skipped = {f["name"] for f in results["flags_not_applicable"]}
    assert {"iterative_weaker_than_single_step", "accuracy_rises_with_budget"} <= skipped
    assert "black_box_beats_white_box" not in skipped and "zero_gradient" not in skipped
    assert len(rows) == 16 and all("sparse-events|ann" in r for r in rows)


def test_events_l0_batches_do_not_depend_on_the_other_batches(trained, test_set):
    threat = make_threat_model("events-l0", budget=16, frame_range=R)
    suite = suite_from_dict(FAST_EVENTS)
    every, _ = run_suite(trained, test_set, suite, 0.0, num_classes=CLASSES, n=24, batch_size=8, progress=False,
                         threat=threat)
    one, _ = run_suite(trained, test_set, suite, 0.0, num_classes=CLASSES, n=24, batch_size=8, progress=False,
                       threat=threat, batches=[2])
    assert one == every[16:]


def test_frames_linf_evaluation_records_eps_relative_to_the_frame_range(trained, test_set):
    results, _ = evaluate(trained, test_set, suite_from_dict(FAST_LINF), 0.125, num_classes=CLASSES, n=8,
                          batch_size=8, progress=False, threat_model="frames-linf", frame_range=R)
    threat = results["threat_model"]
    assert threat["name"] == "frames-linf" and threat["frame_range"] == R and threat["eps_events_per_bin"] == 1.0
    assert "R=8" in threat["meaning"] and results["eps"] == 0.125
    assert {a["name"] for a in results["attacks"]} == {"fgsm", "pgd-5", "square"}
    assert results["unbounded_accuracy"] == 0.0


def test_image_evaluations_record_linf(tiny_model, digits):
    results, _ = evaluate(tiny_model, digits.test, suite_from_dict(FAST_LINF), 0.1, num_classes=10, n=8,
                          batch_size=8, progress=False)
    assert results["threat_model"]["name"] == "linf" and results["threat_model"]["eps"] == 0.1


def test_the_shipped_events_suite():
    suite = load_suite("events")
    kinds = {a.attack for a in suite.attacks}
    assert kinds == {"sparse-events", "random-events"}
    sparse = next(a for a in suite.attacks if a.attack == "sparse-events")
    assert {"hart:0.25", "ann"} <= set(sparse.estimators) and set(sparse.estimators) <= set(bank.QUICK)


@pytest.mark.parametrize("kwargs, message", [
    ({"suite": "quick", "threat_model": "events-l0", "event_budget": 8, "frame_range": R}, "l-inf attack"),
    ({"suite": "events", "threat_model": "frames-linf", "frame_range": R}, "needs the events-l0"),
    ({"suite": "events", "threat_model": "events-l0", "frame_range": R}, "needs an event budget"),
    ({"suite": "events", "threat_model": "events-l0", "event_budget": 0, "frame_range": R}, ">= 1"),
    ({"suite": "events", "threat_model": "events-l0", "event_budget": 8}, "frame range"),
    ({"suite": "quick", "threat_model": "frames-linf"}, "frame range"),
    ({"suite": "quick", "threat_model": "frames-linf", "event_budget": 8, "frame_range": R}, "events-l0 threat model only"),
    ({"suite": "quick"}, "choose the threat model frames-linf"),
    ({"suite": "quick", "threat_model": "l0"}, "unknown threat model"),
])
def test_mismatched_threat_models_are_one_line_errors(trained, test_set, kwargs, message):
    suite = load_suite(kwargs.pop("suite"))
    with pytest.raises(UserError, match=message) as info:
        evaluate(trained, test_set, suite, 0.1, num_classes=CLASSES, n=8, progress=False, **kwargs)
    assert "\n" not in str(info.value)


def test_budget_sweep_under_events_l0(trained, test_set):
    results, _ = evaluate(trained, test_set, load_suite("events"), 0.0, num_classes=CLASSES, n=16, progress=False,
                          threat_model="events-l0", event_budget=8, frame_range=R, eps_sweep=True)
    sweep = results["budget_sweep"]
    assert [p["budget"] for p in sweep] == [2, 4, 8, 16, 32, 64] and "eps_sweep" not in results
    assert "accuracy_rises_with_budget" not in {f["name"] for f in results["flags"]}
    assert sweep[-1]["accuracy"] < sweep[0]["accuracy"] <= results["clean_accuracy"]
    names = {f["name"] for f in results["flags_not_applicable"]}
    assert "accuracy_not_toward_chance" in names and "accuracy_rises_with_budget" not in names


def test_accuracy_rising_with_the_budget_is_flagged():
    from spikeguard.evaluation.flags import sweep_flags

    planted = [{"budget": 4, "accuracy": 0.5}, {"budget": 8, "accuracy": 0.7}]
    assert [f.name for f in sweep_flags(planted, 10, 100, radius="budget")] == ["accuracy_rises_with_budget"]
    assert sweep_flags(planted[::-1], 10, 100, radius="budget") == []


@pytest.mark.parametrize("attacks, message", [
    ([{"attack": "sparse-events", "steps": 2, "estimators": ["triangle:1"], "budget": 9}], "above the threat"),
    ([{"attack": "sparse-events", "steps": 2, "estimators": ["triangle:1"], "budget": 4},
      {"attack": "random-events", "draws": 2}], "whole budget"),
    ([{"attack": "random-events", "draws": 2}], "whole budget"),
])
def test_the_recorded_budget_is_the_budget_attacked(trained, test_set, attacks, message):
    suite = suite_from_dict({"name": "own-budgets", "attacks": attacks})
    with pytest.raises(UserError, match=message):
        evaluate(trained, test_set, suite, 0.1, num_classes=CLASSES, n=8, progress=False, threat_model="events-l0",
                 event_budget=8, frame_range=R)
    smaller_too = suite_from_dict({"name": "mixed", "attacks": [
        {"attack": "sparse-events", "steps": 2, "estimators": ["triangle:1"]},
        {"attack": "sparse-events", "label": "sparse-4", "steps": 2, "estimators": ["triangle:1"], "budget": 4}]})
    results, _ = evaluate(trained, test_set, smaller_too, 0.1, num_classes=CLASSES, n=8, progress=False,
                          threat_model="events-l0", event_budget=8, frame_range=R)
    assert [a["budget"] for a in results["attacks"]] == [8, 4]


def test_event_threat_models_refuse_images_and_run_suite_refuses_event_attacks(tiny_model, digits, trained,
                                                                                test_set):
    for name, extra in (("events-l0", {"event_budget": 8}), ("frames-linf", {})):
        with pytest.raises(UserError, match="needs event frames"):
            evaluate(tiny_model, digits.test, load_suite("events" if name == "events-l0" else "quick"), 0.1,
                     num_classes=10, n=8, progress=False, threat_model=name, frame_range=R, **extra)
    with pytest.raises(UserError, match="events-l0"):
        run_suite(trained, test_set, load_suite("events"), 0.1, num_classes=CLASSES, n=8, progress=False)
    with pytest.raises(UserError, match="transfer"):
        evaluate(trained, test_set, load_suite("events"), 0.1, num_classes=CLASSES, n=8, progress=False,
                 threat_model="events-l0", event_budget=8, frame_range=R, source=trained)


@pytest.mark.parametrize("bad, message", [
    ({"attacks": [{"attack": "sparse-events", "eps": 0.1}]}, "no norm or eps"),
    ({"attacks": [{"attack": "random-events", "norm": "l2"}]}, "no norm or eps"),
    ({"attacks": [{"attack": "random-events", "estimators": ["ann"]}]}, "no gradients"),
    ({"attacks": [{"attack": "sparse-events", "budget": 0}]}, "budget"),
    ({"attacks": [{"attack": "sparse-events", "budget": 2.5}]}, "budget"),
    ({"attacks": [{"attack": "sparse-events", "steps": 0}]}, "steps"),
    ({"attacks": [{"attack": "sparse-events", "queries": 3}]}, "takes no"),
])
def test_bad_event_suites_are_refused(bad, message):
    with pytest.raises(UserError, match=message):
        suite_from_dict(bad)


class NoisyLogits(torch.nn.Module):
    """A stochastic frames model: the trained SNN's logits plus Gaussian noise on every pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        return logits + 0.5 * torch.randn_like(logits)


def test_events_l0_attacks_a_stochastic_model_with_eot(trained, test_set):
    suite = suite_from_dict({**FAST_EVENTS, "attacks": FAST_EVENTS["attacks"][:1]})
    results, rows = evaluate(NoisyLogits(trained), test_set, suite, 0.0, num_classes=CLASSES, n=8, batch_size=8,
                             progress=False, threat_model="events-l0", event_budget=24, frame_range=R)
    assert results["stochastic"] and results["eot_draws"] == 2
    scores = {r["sparse-events"] for r in rows}
    assert scores <= {0.0, 0.5, 1.0} and min(scores) < 1.0
