"""Model registry: every model is built the same way, from a dict that a checkpoint can store.

A model name maps to its facts (which inputs it takes, a one-line description) and to its body factory
("module:function", imported on first use), so names and facts load without PyTorch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from spikeguard.errors import UserError
from spikeguard.registry import Registry
from spikeguard.snn.registry import ENCODERS, parse_estimator

if TYPE_CHECKING:
    from spikeguard.models.base import SpikingNet

# A body factory is body(neuron, num_classes, in_channels, image_size) -> nn.Module on time-folded input.
MODELS = Registry("model")
MODELS.register("digits_cnn", "spikeguard.models.digits_cnn:digits_cnn_body", inputs=("image",),
                description="small CNN for the embedded 8x8 digits (also mnist5k's 28x28), trains in seconds on "
                            "a CPU")
MODELS.register("dvs_cnn", "spikeguard.models.dvs_cnn:dvs_cnn_body", inputs=("event",),
                description="small CNN for event frames (tests and quick CIFAR10-DVS runs)")
MODELS.register("vgg11", "spikeguard.models.vgg:vgg11_body", inputs=("image", "event"),
                description="VGG-11, the paper's CIFAR and CIFAR10-DVS model")
MODELS.register("wrn16_4", "spikeguard.models.wrn:wrn_body", inputs=("image",),
                description="wide ResNet-16-4")
MODELS.register("wrn16_4_release", "spikeguard.models.wrn:wrn_release_body", inputs=("image",),
                description="wide ResNet-16-4 with the SR release's two free mixing weights per block "
                            "(imported published checkpoints)")


# What the network's units are: a model is built as either, from the same architecture and weights' shapes.
NETWORKS = {
    "snn": "integrate-and-fire neurons over T time steps, trained through the training estimator",
    "ann": "the ANN twin: ReLU in place of the spiking neurons, one time step (event frames: one step per frame)",
}


@dataclass(frozen=True)
class ModelSpec:
    """All that is needed to rebuild a model; stored in every checkpoint under "arch"."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    time_steps: int = 8
    tau: float = 1.0
    encoder: str = "direct"
    estimator: str = "triangle:1.0"  # the training estimator; evaluation's and analysis's default
    spiking: bool = True             # False: the ANN twin was trained (ReLU units; time_steps 1 on images)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        try:
            return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})
        except (TypeError, KeyError) as e:
            raise UserError(f"checkpoint architecture record is malformed: {e}") from None


def create_model(spec: ModelSpec) -> SpikingNet:
    from spikeguard.models.base import SpikingNet, neuron_factory

    if spec.name not in MODELS:
        raise UserError(f"unknown model '{spec.name}'; choose from {', '.join(MODELS)}")
    if spec.encoder not in ENCODERS:
        raise UserError(f"unknown encoder '{spec.encoder}'; choose from {', '.join(ENCODERS)}")
    if not isinstance(spec.spiking, bool):
        raise UserError(f"the architecture record's 'spiking' must be true or false, got {spec.spiking!r}")
    if spec.time_steps < 1:
        raise UserError(f"time steps must be at least 1, got {spec.time_steps}")
    estimator = parse_estimator(spec.estimator)
    neuron = neuron_factory(spec.time_steps, spec.tau, estimator, spiking=spec.spiking)
    body = MODELS.load(spec.name)(neuron, spec.num_classes, spec.in_channels, spec.image_size)
    return SpikingNet(body, spec.time_steps, spec.mean, spec.std, spec.encoder)
