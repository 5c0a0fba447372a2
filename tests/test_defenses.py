import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.defenses import DEFENSES, create_defense, sparsity_penalty
from spikeguard.defenses.gradient_norm import gradient_norm_terms
from spikeguard.defenses.orthogonal import retract, retract_model
from spikeguard.errors import UserError
from spikeguard.models import create_model
from tests.conftest import tiny_spec


def slow_sparsity_penalty(model, x, y, h):
    """docs/method.md's SR penalty, one sample at a time, with the two-class probability written out."""
    terms = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        z = model(xi)[0]
        others = [j for j in range(z.numel()) if j != y[i]]
        k = others[int(torch.stack([z[j] for j in others]).argmax())]
        f = torch.exp(z[y[i]]) / (torch.exp(z[y[i]]) + torch.exp(z[k]))
        (g,) = torch.autograd.grad(f, xi, retain_graph=True)
        z2 = model(xi.detach() + h * g.sign())[0]
        f2 = torch.exp(z2[y[i]]) / (torch.exp(z2[y[i]]) + torch.exp(z2[k]))
        terms.append(((f2 - f) / h) ** 2)
    return torch.stack(terms).mean()


def test_sparsity_penalty_matches_slow_per_sample_computation(tiny_model, digits_batch):
    x, y = digits_batch[0].double(), digits_batch[1]
    tiny_model.double().eval()  # BatchNorm on running statistics: samples independent, as the slow version assumes
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    fast = sparsity_penalty(tiny_model, x, y, h=0.05)
    slow = slow_sparsity_penalty(tiny_model, x, y, h=0.05)
    assert fast.item() > 0
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    fast_grads = torch.autograd.grad(fast, params, allow_unused=True)
    slow_grads = torch.autograd.grad(slow, params, allow_unused=True)
    for a, b in zip(fast_grads, slow_grads):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    assert any(g is not None and g.abs().sum() > 0 for g in fast_grads)


def test_sparsity_penalty_works_on_any_image_model(digits_batch):
    x, y = digits_batch
    ann = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    p = sparsity_penalty(ann, x, y)
    assert p.dim() == 0 and p.requires_grad
    p.backward()
    assert ann[1].weight.grad.abs().sum() > 0


def test_sparsity_penalty_rejects_bad_h(tiny_model, digits_batch):
    with pytest.raises(UserError):
        sparsity_penalty(tiny_model, *digits_batch, h=0.0)


def smooth_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def test_gradient_regularisation_against_finite_differences():
    model = smooth_model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 3, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    _, penalty = gradient_norm_terms(model, x, y)

    def per_sample_loss(xi, yi):
        return F.cross_entropy(model(xi), yi, reduction="sum")

    step, norms = 1e-6, []
    for i in range(3):
        xi, yi = x[i:i + 1], y[i:i + 1]
        fd = []
        for j in range(xi.numel()):
            e = torch.zeros_like(xi).view(-1)
            e[j] = step
            e = e.view_as(xi)
            fd.append((per_sample_loss(xi + e, yi) - per_sample_loss(xi - e, yi)) / (2 * step))
        norms.append(torch.stack(fd).pow(2).sum())
    torch.testing.assert_close(penalty, torch.stack(norms).mean(), rtol=1e-6, atol=1e-9)

    # the penalty's parameter gradient (double backprop) against finite differences of the penalty
    weight = model[1].weight
    (analytic,) = torch.autograd.grad(penalty, weight)

    def penalty_at(idx, value):
        with torch.no_grad():
            weight[idx] = value
        return gradient_norm_terms(model, x, y)[1].item()

    for idx in [(0, 0), (3, 5), (5, 11)]:
        old = weight[idx].item()
        fd = (penalty_at(idx, old + 1e-5) - penalty_at(idx, old - 1e-5)) / 2e-5
        penalty_at(idx, old)
        assert analytic[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_rat_retraction_moves_weights_toward_orthogonality():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    w = 1.3 * q + 0.1 * torch.randn(32, 32, generator=g, dtype=torch.float64)
    eye = torch.eye(32, dtype=torch.float64)
    before = torch.linalg.norm(w @ w.T - eye)
    for _ in range(5):
        retract(w, beta=0.05)
    assert torch.linalg.norm(w @ w.T - eye) < 0.5 * before


def test_rat_retraction_updates_convs_and_a_row_subset_of_large_linears():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(10, 400), nn.Linear(400, 5))
    before = [p.detach().clone() for p in model.parameters()]
    conv_dev = torch.linalg.norm(model[0].weight.view(8, -1) @ model[0].weight.view(8, -1).T - torch.eye(8))
    retract_model(model, beta=0.004, generator=torch.Generator().manual_seed(0))
    conv_w = model[0].weight.view(8, -1)
    assert torch.linalg.norm(conv_w @ conv_w.T - torch.eye(8)) < conv_dev
    changed_rows = (model[2].weight != before[2]).any(1).sum().item()
    assert changed_rows == int(0.3 * 400)
    assert (model[3].weight != before[4]).any(1).all()  # 5 rows < 200: every row updated


@pytest.mark.parametrize("name", DEFENSES)
def test_each_defense_lowers_its_loss(name, tiny_model, digits_batch):
    x, y = digits_batch
    torch.manual_seed(1)  # sr_distill's teacher: an untrained network, which the student learns to match
    teacher = create_model(tiny_spec()).eval()
    defense = create_defense(name, lamb=0.01, gr_lamb=0.01, eps=0.05, alpha=0.02, steps=3, teacher=teacher)
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.05, momentum=0.9)
    tiny_model.train()
    losses = []
    for _ in range(12):
        loss, parts = defense.loss(tiny_model, x, y)
        assert torch.isfinite(loss) and "ce" in parts
        opt.zero_grad()
        loss.backward()
        opt.step()
        defense.after_step(tiny_model)
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3


@pytest.mark.parametrize("kw", [dict(name="bogus"), dict(name="sr", h=0.0), dict(name="at", eps=-0.1),
                                dict(name="at", steps=0), dict(name="at", attack="cw"),
                                dict(name="sr", lamb=float("nan"))])
def test_create_defense_rejects_bad_parameters(kw):
    with pytest.raises(UserError):
        create_defense(**kw)


def test_sr_star_trains_on_adversarial_examples(tiny_model, digits_batch):
    """SR* must see other inputs than SR: its loss on the same weights and batch is higher."""
    x, y = digits_batch
    tiny_model.train()
    sr = create_defense("sr", lamb=0.01)
    star = create_defense("sr_star", lamb=0.01, eps=0.1, alpha=0.05, steps=3)
    torch.manual_seed(0)
    clean = sr.loss(tiny_model, x, y)[1]["ce"]
    adversarial = star.loss(tiny_model, x, y)[1]["ce"]
    assert adversarial > clean


# ---- SR combined with RAT and with GR (docs/findings.md, question 2) ---------------------------------------

def test_sr_gr_is_cross_entropy_plus_both_penalties_each_as_its_own_defense_computes_it(tiny_model, digits_batch):
    x, y = digits_batch[0].double(), digits_batch[1]
    tiny_model.double().eval()  # BatchNorm on running statistics: every pass sees the same normalisation
    combined = create_defense("sr_gr", lamb=0.3, h=0.05, gr_lamb=0.7)
    loss, parts = combined.loss(tiny_model, x, y)
    ce = F.cross_entropy(tiny_model(x), y)
    sr = sparsity_penalty(tiny_model, x, y, h=0.05)
    gr = gradient_norm_terms(tiny_model, x, y)[1]
    assert sr > 0 and gr > 0
    torch.testing.assert_close(loss, ce + 0.3 * sr + 0.7 * gr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts["penalty"], sr.detach())
    torch.testing.assert_close(parts["gr_penalty"], gr.detach())
    # both penalties reach the parameters: the combined loss's gradient is the sum of the parts' gradients
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(ce + 0.3 * sr + 0.7 * gr, params, allow_unused=True)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_sr_gr_needs_both_weights():
    with pytest.raises(UserError, match="gr_lamb"):
        create_defense("sr_gr", lamb=0.1)
    with pytest.raises(UserError, match="gr_lamb"):
        create_defense("sr_gr", lamb=0.1, gr_lamb=float("inf"))
    assert create_defense("sr_gr", lamb=0.1, gr_lamb=0.5).gr_lamb == 0.5


def test_sr_rat_is_sr_on_rat_fgsm_examples_then_the_retraction(tiny_model, digits_batch):
    """Its cross-entropy and penalty are SR's on FGSM examples at RAT's 2/255 (not on the clean batch, not at
    the training eps), and after each step it retracts the weights as RAT does, from the same row stream."""
    from spikeguard.attacks import fgsm
    from spikeguard.defenses.factories import RAT_EPS
    from spikeguard.defenses.sparsity import sparsity_terms

    x, y = digits_batch[0].double(), digits_batch[1]
    tiny_model.double().eval()
    combined = create_defense("sr_rat", lamb=0.2, h=0.05, eps=0.3, beta=0.01, seed=4)
    loss, parts = combined.loss(tiny_model, x, y)
    x_adv = fgsm(tiny_model, x, y, RAT_EPS)
    assert 0 < (x_adv - x).abs().max() <= RAT_EPS + 1e-12
    logits, penalty = sparsity_terms(tiny_model, x_adv, y, 0.05)
    torch.testing.assert_close(parts["ce"], F.cross_entropy(logits, y).detach())
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + 0.2 * penalty)
    assert parts["ce"] > F.cross_entropy(tiny_model(x), y)  # the examples are adversarial
    rat = create_defense("rat", beta=0.01, seed=4)
    twin = copy.deepcopy(tiny_model)
    before = copy.deepcopy(tiny_model.state_dict())
    combined.after_step(tiny_model)
    assert any(not torch.equal(a, b) for a, b in zip(tiny_model.state_dict().values(), before.values()))
    rat.after_step(twin)
    for a, b in zip(tiny_model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


def test_the_combined_defenses_resolve_their_weights_and_record_only_their_own(tmp_path):
    """sr_gr's gr_lamb defaults to the GR weight validated on digits and is refused missing elsewhere; config
    records carry gr_lamb for sr_gr only, and a study grid collapses it for the other defenses."""
    from spikeguard.config import config_from_dict, validated_lamb
    from spikeguard.study.plan import plan_from_dict

    cfg = config_from_dict({"dataset": "digits", "defense": "sr_gr"}).resolved()
    assert (cfg.lamb, cfg.gr_lamb) == (validated_lamb("digits", "sr"), validated_lamb("digits", "gr")) == (0.03, 1.0)
    assert cfg.to_record()["gr_lamb"] == 1.0
    assert "gr_lamb" not in config_from_dict({"dataset": "digits", "defense": "sr"}).resolved().to_record()
    with pytest.raises(UserError, match="--gr-lamb"):
        config_from_dict({"dataset": "mnist5k", "defense": "sr_gr", "lamb": 0.1}).resolved()
    rat = config_from_dict({"dataset": "digits", "defense": "sr_rat"}).resolved().to_record()
    assert rat["lamb"] == 0.03 and "gr_lamb" not in rat and "attack" not in rat  # RAT's examples are fixed
    plan = plan_from_dict({"name": "p", "grid": {"defense": ["sr", "sr_gr"], "gr_lamb": [0.3, 1.0]},
                           "train": {"epochs": 1}, "evaluate": [{"suite": "quick"}]})
    assert [c.id for c in plan.cells] == ["defense-sr", "defense-sr_gr_gr_lamb-0.3", "defense-sr_gr_gr_lamb-1"]


@pytest.mark.parametrize("defense", ["sr_rat", "sr_gr"])
def test_the_combined_defenses_train_from_the_cli_and_log_their_penalties(defense, tmp_path):
    import json

    from spikeguard.cli import main

    out = tmp_path / defense
    code = main(["train", "--out", str(out), "--defense", defense, "--epochs", "1", "--time-steps", "2",
                 "--batch-size", "256", "--no-progress", "--quiet"])
    assert code == 0
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch["penalty"] > 0 and (epoch.get("gr_penalty", 1.0) > 0)
    assert ("gr_penalty" in epoch) == (defense == "sr_gr")


# ---- the distilled SR student (sr_distill) ------------------------------------------------------------------

def _teacher(seed=1):
    torch.manual_seed(seed)
    return create_model(tiny_spec()).double().eval()


@pytest.mark.parametrize("alpha,temperature", [(0.9, 4.0), (0.3, 1.0), (0.0, 2.0)])
def test_sr_distill_mixes_cross_entropy_and_the_softened_kl_and_adds_the_sr_penalty(
        tiny_model, digits_batch, alpha, temperature):
    """loss = (1 - a) CE + a T^2 KL(teacher_T || student_T) + lamb SR, the KL written out by hand; at a = 0
    it is SR's loss exactly, and only the student's parameters get gradients."""
    from spikeguard.defenses.sparsity import sparsity_terms

    x, y = digits_batch[0].double(), digits_batch[1]
    tiny_model.double().eval()
    teacher = _teacher()
    before = copy.deepcopy(teacher.state_dict())
    student = create_defense("sr_distill", lamb=0.2, h=0.05, teacher=teacher, kd_temperature=temperature,
                             kd_alpha=alpha)
    loss, parts = student.loss(tiny_model, x, y)
    logits, penalty = sparsity_terms(tiny_model, x, y, 0.05)
    p_t = F.softmax(teacher(x) / temperature, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(logits / temperature, 1))).sum(1).mean() * temperature ** 2
    ce = F.cross_entropy(logits, y)
    torch.testing.assert_close(loss, (1 - alpha) * ce + alpha * kl + 0.2 * penalty, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(parts["kd"], kl.detach())
    assert parts["kd"] > 0  # a different network: the student does not already match it
    if alpha == 0:
        torch.testing.assert_close(loss, create_defense("sr", lamb=0.2, h=0.05).loss(tiny_model, x, y)[0])
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), before.values()))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.parameters())


def test_sr_distill_pulls_the_student_towards_its_teacher(tiny_model, digits_batch):
    """With the distillation term weighed alone (kd_alpha 1, a negligible SR weight), steps lower the KL to the
    teacher."""
    x, y = digits_batch
    tiny_model.train()
    teacher = _teacher().float()
    defense = create_defense("sr_distill", lamb=1e-4, teacher=teacher, kd_temperature=2.0, kd_alpha=1.0)
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.05, momentum=0.9)
    kls = []
    for _ in range(10):
        loss, parts = defense.loss(tiny_model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        kls.append(parts["kd"].item())
    assert kls[-1] < 0.7 * kls[0]


@pytest.mark.parametrize("kw,fragment", [(dict(), "needs a teacher"),
                                         (dict(teacher=nn.Identity(), kd_alpha=1.5), "kd_alpha"),
                                         (dict(teacher=nn.Identity(), kd_temperature=0.0), "kd_temperature"),
                                         (dict(teacher=nn.Identity(), kd_temperature=float("nan")), "kd_temperature")])
def test_sr_distill_refuses_a_missing_teacher_and_bad_settings(kw, fragment):
    with pytest.raises(UserError, match=fragment):
        create_defense("sr_distill", lamb=0.1, **kw)
