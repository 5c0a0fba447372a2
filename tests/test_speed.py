"""Speed options change nothing beyond their stated tolerance (spikeguard/speed.py).

channels_last is compared in float64, where no membrane can sit within rounding of the threshold, so
spikes and logits must agree to 1e-9. torch.compile is traced with the aot_eager backend (the same
dynamo and autograd tracing as inductor, without the C++ code generation that takes minutes on 2 cores;
benchmarks/neuron_throughput.py checks inductor's output). bf16 is checked against float32 on the trained
test model with the tolerances speed.py states.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from spikeguard.defenses import create_defense
from spikeguard.errors import UserError
from spikeguard.snn.control import spiking_layers
from spikeguard.speed import (
    SpeedOptions,
    autocast,
    configure_backends,
    prepare_model,
    to_memory_format,
)

CPU = torch.device("cpu")
FLOAT32 = SpeedOptions()


def _loss_and_grads(model, defense, x, y, options=FLOAT32):
    with autocast(CPU, options.bf16):
        loss, _ = create_defense(defense, lamb=0.1).loss(model, to_memory_format(x, options), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), torch.cat([g.double().flatten() for g in grads])


def test_channels_last_changes_nothing(tiny_model, digits_batch):
    x, y = (digits_batch[0].double(), digits_batch[1])
    plain = tiny_model.double().train()
    fast = copy.deepcopy(plain)
    options = SpeedOptions(channels_last=True)
    assert prepare_model(fast, options) is fast and fast.state_dict().keys() == plain.state_dict().keys()
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    for defense in ("vanilla", "sr"):
        (l0, g0), (l1, g1) = _loss_and_grads(plain, defense, x, y), _loss_and_grads(fast, defense, x, y, options)
        assert abs(l0 - l1) < 1e-9 and (g0 - g1).abs().max() < 1e-9


@pytest.mark.parametrize("what", ["neurons", "model"])
def test_compile_changes_nothing(tiny_model, digits_batch, what):
    torch._dynamo.reset()
    x, y = digits_batch
    plain = tiny_model.train()
    fast = copy.deepcopy(plain)
    net = prepare_model(fast, SpeedOptions(compile=what), backend="aot_eager")
    assert (net is fast) == (what == "neurons")
    (l0, g0), (l1, g1) = _loss_and_grads(plain, "sr", x, y), _loss_and_grads(net, "sr", x, y)
    assert abs(l0 - l1) < 1e-5 and (g0 - g1).abs().max() < 1e-5 * max(1.0, g0.abs().max().item())


def test_bf16_stays_within_its_stated_tolerance(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:128], y[:128]
    options = SpeedOptions(bf16=True)
    plain = tiny_model.train()
    fast = prepare_model(copy.deepcopy(plain), options)
    dtypes = {}

    def record(name):
        def hook(module, args, out):
            dtypes[name] = out.dtype
        return hook

    for name, m in fast.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or m in spiking_layers(fast):
            m.register_forward_hook(record(name))
    for defense, min_cos in (("vanilla", 0.97), ("gr", 0.93)):
        (l0, g0), (l1, g1) = _loss_and_grads(copy.deepcopy(plain), defense, x, y), _loss_and_grads(fast, defense, x, y, options)
        assert abs(l1 - l0) / l0 < 0.05, defense
        assert F.cosine_similarity(g0, g1, dim=0) > min_cos, defense
    convs = [n for n, m in fast.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert dtypes[convs[0]] == dtypes[convs[-1]] == torch.float32  # the two ends stay float32
    assert all(dtypes[n] == torch.bfloat16 for n in convs[1:-1])  # the hidden layers run in bf16
    assert all(dtypes[n] == torch.float32 for n, m in fast.named_modules() if m in spiking_layers(fast))


def test_speed_options_refuse_what_would_be_wrong():
    SpeedOptions(bf16=True, channels_last=True, compile="neurons").check(CPU, "at")
    with pytest.raises(UserError, match="double backward"):
        SpeedOptions(compile="model").check(CPU, "gr")
    for defense in ("sr", "sr_star"):
        with pytest.raises(UserError, match="bf16"):
            SpeedOptions(bf16=True).check(CPU, defense)
    with pytest.raises(UserError, match="compile choice"):
        SpeedOptions(compile="everything").check(CPU)


def test_tf32_is_off_unless_asked():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        configure_backends(SpeedOptions())
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        configure_backends(SpeedOptions(tf32=True))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("flags,message", [
    (["--defense", "sr", "--lamb", "0.1", "--bf16"], "--bf16 cannot be used with defense 'sr'"),
    (["--defense", "gr", "--lamb", "0.1", "--compile", "model"], "--compile cannot be used with defense 'gr'"),
    (["--compile", "fast"], "unknown compile choice"),
    (["--defense", "gr", "--lamb", "0.1", "--sync-bn"], "--sync-bn cannot be used with defense 'gr'"),
])
def test_train_refuses_speed_flags_that_would_change_results(tmp_path, capsys, flags, message):
    from spikeguard.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
