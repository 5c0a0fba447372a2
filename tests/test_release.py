"""Importing the SR authors' published checkpoints: a state dict written in their layout
(/work/shared/data/release_state_dict_keys.txt, copied below as the generator of the layout) for full-size
VGG-11 and WRN-16-4, 10 and 100 classes, imported, and its logits compared with a reference forward
written from the facts (docs/ecosystem.md, RELEASE_CHECKPOINTS.md) with functional ops over the raw state
dict: conv with bias, BatchNorm, an explicit IF loop (tau 1, threshold 1, hard reset), T = 8, the published
normalisation, logits averaged over time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeguard.checkpoint import load_model
from spikeguard.cli import main
from spikeguard.release import NORMALISATION

T = 8
VGG_LAYERS = {"layer1": [(3, 64)], "layer2": [(64, 128), (128, 256)], "layer3": [(256, 512), (512, 512), (512, 512)],
              "layer4": [(512, 512), (512, 512)]}


def _bn(sd, prefix, c, g):
    sd[f"{prefix}.weight"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{prefix}.bias"] = 0.3 * torch.randn(c, generator=g)
    sd[f"{prefix}.running_mean"] = 0.2 * torch.randn(c, generator=g)
    sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def _w(g, *shape):
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(*shape, generator=g) * (2.5 / fan_in) ** 0.5


def vgg_state(classes, g):
    sd = {}
    for name, convs in VGG_LAYERS.items():
        for i, (cin, cout) in enumerate(convs):
            sd[f"{name}.{3 * i}.weight"] = _w(g, cout, cin, 3, 3)
            sd[f"{name}.{3 * i}.bias"] = 0.1 * torch.randn(cout, generator=g)
            _bn(sd, f"{name}.{3 * i + 1}", cout, g)
    for i, (fin, fout) in zip((1, 3, 5), ((8192, 4096), (4096, 4096), (4096, classes))):
        sd[f"classifier.{i}.weight"] = _w(g, fout, fin)
        sd[f"classifier.{i}.bias"] = 0.1 * torch.randn(fout, generator=g)
    return sd


def wrn_state(classes, g):
    sd = {"conv1.weight": _w(g, 16, 3, 3, 3)}
    cin = 16
    for group, width in enumerate((64, 128, 256), start=1):
        for i in range(2):
            p = f"block{group}.{i}"
            _bn(sd, f"{p}.bn1", cin, g)
            sd[f"{p}.conv1.weight"] = _w(g, width, cin, 3, 3)
            _bn(sd, f"{p}.bn2", width, g)
            sd[f"{p}.conv2.weight"] = _w(g, width, width, 3, 3)
            if i == 0:
                sd[f"{p}.convShortcut.weight"] = _w(g, width, cin, 1, 1)
            sd[f"{p}.convex.comb"] = torch.tensor([0.7, 0.45]) + 0.1 * torch.rand(2, generator=g)  # sum != 1
            cin = width
    _bn(sd, "bn1", 256, g)
    sd["fc.weight"], sd["fc.bias"] = _w(g, classes, 256), 0.1 * torch.randn(classes, generator=g)
    return sd


def bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


class IF:
    """An explicit integrate-and-fire loop state per layer: u += I; s = u >= 1; u = u * (1 - s)."""

    def __init__(self):
        self.u = {}

    def __call__(self, key, current):
        u = self.u.get(key, torch.zeros_like(current)) + current
        s = (u >= 1.0).to(current.dtype)
        self.u[key] = u * (1 - s)
        return s


def reference_vgg(sd, x):
    neurons, outs = IF(), []
    for _ in range(T):
        h = x
        for name, convs in VGG_LAYERS.items():
            for i in range(len(convs)):
                h = F.conv2d(h, sd[f"{name}.{3 * i}.weight"], sd[f"{name}.{3 * i}.bias"], padding=1)
                h = neurons(f"{name}.{i}", bn(h, sd, f"{name}.{3 * i + 1}"))
            if name != "layer4":
                h = F.avg_pool2d(h, 2)
        h = h.flatten(1)
        h = neurons("fc1", F.linear(h, sd["classifier.1.weight"], sd["classifier.1.bias"]))
        h = neurons("fc2", F.linear(h, sd["classifier.3.weight"], sd["classifier.3.bias"]))
        outs.append(F.linear(h, sd["classifier.5.weight"], sd["classifier.5.bias"]))
    return torch.stack(outs).mean(0)


def reference_wrn(sd, x):
    neurons, outs = IF(), []
    for _ in range(T):
        h = F.conv2d(x, sd["conv1.weight"], padding=1)
        for group in (1, 2, 3):
            for i in range(2):
                p = f"block{group}.{i}"
                stride = 2 if group > 1 and i == 0 else 1
                pre = neurons(f"{p}.a", bn(h, sd, f"{p}.bn1"))
                r = F.conv2d(pre, sd[f"{p}.conv1.weight"], stride=stride, padding=1)
                r = F.conv2d(neurons(f"{p}.b", bn(r, sd, f"{p}.bn2")), sd[f"{p}.conv2.weight"], padding=1)
                short = F.conv2d(pre, sd[f"{p}.convShortcut.weight"], stride=stride) if i == 0 else h
                c = sd[f"{p}.convex.comb"]
                h = c[0] * short + c[1] * r
        h = neurons("last", bn(h, sd, "bn1"))
        outs.append(F.linear(F.adaptive_avg_pool2d(h, 1).flatten(1), sd["fc.weight"], sd["fc.bias"]))
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize("model,dataset", [("vgg11", "cifar10"), ("vgg11", "cifar100"), ("wrn16_4", "cifar10"),
                                           ("wrn16_4", "cifar100")])
def test_imported_logits_equal_the_reference_forward(model, dataset, tmp_path):
    g = torch.Generator().manual_seed(0)
    classes = 10 if dataset == "cifar10" else 100
    sd = vgg_state(classes, g) if model == "vgg11" else wrn_state(classes, g)
    pth = tmp_path / "published.pth"
    torch.save(sd, pth)
    out = tmp_path / "imported.pt"
    assert main(["import", str(pth), "--format", "sr-release", "--model", model, "--dataset", dataset,
                 "--out", str(out)]) == 0
    net, ckpt = load_model(out)
    images = torch.rand(2, 3, 32, 32, generator=g)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALISATION[dataset])
    with torch.no_grad():
        expected = (reference_vgg if model == "vgg11" else reference_wrn)(sd, (images - mean) / std)
        ours = net(images)
    assert expected.abs().max() > 0.05  # the network is not silent
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert torch.equal(ours.argmax(1), expected.argmax(1))
    assert "test split" in ckpt["config"]["imported"]["selection"]


def test_import_refuses_a_foreign_file_in_one_line(tmp_path, capsys):
    pth = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, pth)
    assert main(["import", str(pth), "--format", "sr-release", "--model", "vgg11", "--dataset", "cifar10",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
