import pytest
import torch
from torch import nn

from spikeguard.data.registry import DEFAULT_MODEL
from spikeguard.errors import UserError
from spikeguard.models import ModelSpec, ann_twin, create_model
from spikeguard.models.wrn import MixedResidualBlock
from spikeguard.snn import IFNeuron, spiking_layers

CIFAR = dict(num_classes=10, in_channels=3, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_vgg11_matches_the_paper_layout():
    model = create_model(ModelSpec("vgg11", time_steps=2, **CIFAR))
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 128, 256, 512, 512, 512, 512, 512]
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(8192, 4096), (4096, 4096), (4096, 10)]
    assert len(spiking_layers(model)) == 8 + 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_wrn16_4_has_widths_64_128_256_and_convex_mixing():
    model = create_model(ModelSpec("wrn16_4", time_steps=2, **CIFAR))
    blocks = [m for m in model.modules() if isinstance(m, MixedResidualBlock)]
    assert len(blocks) == 6
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256]
    assert all(0 < torch.sigmoid(b.mix_logit).item() < 1 for b in blocks)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(b.mix_logit.grad is not None for b in blocks)


@pytest.mark.parametrize("T", [1, 3, 8])
def test_time_steps_are_configurable(T):
    model = create_model(ModelSpec("digits_cnn", 10, 1, 8, (0.3,), (0.4,), time_steps=T))
    assert all(layer.time_steps == T for layer in spiking_layers(model))
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)


def test_ann_twin_of_vgg_runs_one_step_with_relu():
    model = create_model(ModelSpec("vgg11", time_steps=4, **CIFAR))
    twin = ann_twin(model)
    assert twin.time_steps == 1 and twin.encoder.time_steps == 1
    assert all(isinstance(m, IFNeuron) and not m.spiking for m in spiking_layers(twin))
    assert twin(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_registry_defaults_and_errors():
    assert DEFAULT_MODEL == {"digits": "digits_cnn", "mnist5k": "digits_cnn", "cifar10": "vgg11", "cifar100": "vgg11",
                             "cifar10dvs": "vgg11"}
    with pytest.raises(UserError):
        create_model(ModelSpec("resnet999", **CIFAR))
    with pytest.raises(UserError):
        create_model(ModelSpec("vgg11", encoder="rate", **CIFAR))
    with pytest.raises(UserError):
        create_model(ModelSpec("vgg11", time_steps=0, **CIFAR))
    spec = ModelSpec("vgg11", tau=0.5, **CIFAR)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UserError):
        ModelSpec.from_dict({"name": "vgg11"})
