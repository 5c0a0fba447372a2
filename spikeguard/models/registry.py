"""Model registry: every model is built the same way, from a dict that a checkpoint can store."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from torch import nn

from spikeguard.errors import UserError
from spikeguard.models.base import SpikingNet, neuron_factory
from spikeguard.models.digits_cnn import digits_cnn_body
from spikeguard.models.dvs_cnn import dvs_cnn_body
from spikeguard.models.vgg import vgg11_body
from spikeguard.models.wrn import wrn_body
from spikeguard.snn import ENCODERS, parse_estimator

BodyFactory = Callable[..., nn.Module]

MODELS: dict[str, BodyFactory] = {
    "digits_cnn": digits_cnn_body,
    "dvs_cnn": dvs_cnn_body,
    "vgg11": vgg11_body,
    "wrn16_4": wrn_body,
}
DEFAULT_MODEL = {"digits": "digits_cnn", "cifar10": "vgg11", "cifar100": "vgg11", "cifar10dvs": "vgg11"}


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
    estimator: str = "triangle:1.0"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        try:
            return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})
        except (TypeError, KeyError) as e:
            raise UserError(f"checkpoint architecture record is malformed: {e}") from None


def create_model(spec: ModelSpec) -> SpikingNet:
    if spec.name not in MODELS:
        raise UserError(f"unknown model '{spec.name}'; choose from {', '.join(MODELS)}")
    if spec.encoder not in ENCODERS:
        raise UserError(f"unknown encoder '{spec.encoder}'; choose from {', '.join(ENCODERS)}")
    if spec.time_steps < 1:
        raise UserError(f"time steps must be at least 1, got {spec.time_steps}")
    estimator = parse_estimator(spec.estimator)
    neuron = neuron_factory(spec.time_steps, spec.tau, estimator)
    body = MODELS[spec.name](neuron, spec.num_classes, spec.in_channels, spec.image_size)
    return SpikingNet(body, spec.time_steps, spec.mean, spec.std, spec.encoder)
