"""The training configuration: one dataclass, read from YAML and/or flags, checked before any work."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from spikeguard.errors import UserError

# eps used when neither flag nor config gives one: the paper's 8/255 on CIFAR; the digits value is the
# demo's, chosen on the validation split (spikeguard/demo_selection.json; a test keeps them equal).
DEFAULT_EPS = {"digits": 0.15, "cifar10": 8 / 255, "cifar100": 8 / 255}


@dataclass
class TrainConfig:
    dataset: str = "digits"
    model: str | None = None          # None: the data set's default model
    defense: str = "vanilla"
    lamb: float = 0.0                 # weight of the SR or GR penalty
    h: float = 0.01                   # SR finite-difference step
    eps: float | None = None          # adversarial-training radius (pixel scale); None: DEFAULT_EPS
    alpha: float | None = None        # PGD step; None: 2.5 * eps / steps
    steps: int = 7                    # PGD steps for AT / SR*
    attack: str = "pgd"               # example generator for AT / SR*: fgsm or pgd
    beta: float = 0.004               # RAT retraction strength
    time_steps: int = 8
    tau: float = 1.0
    encoder: str = "direct"
    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_fraction: float = 0.1
    augment: bool = True
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    device: str = "auto"
    grad_stats_batch: int = 256       # size of the fixed validation batch for input-gradient statistics

    def resolved(self) -> "TrainConfig":
        """A copy with the data-set defaults filled in and every field checked."""
        from spikeguard.data import DATASETS
        from spikeguard.models import DEFAULT_MODEL

        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset '{self.dataset}'; choose from {', '.join(DATASETS)}")
        cfg = dataclasses.replace(self)
        if cfg.model is None:
            cfg.model = DEFAULT_MODEL[cfg.dataset]
        if cfg.eps is None:
            cfg.eps = DEFAULT_EPS[cfg.dataset]
        if cfg.alpha is None:
            cfg.alpha = 2.5 * cfg.eps / cfg.steps if cfg.steps > 0 else cfg.eps
        cfg.check()
        return cfg

    def check(self) -> None:
        from spikeguard.defenses import DEFENSES
        from spikeguard.defenses.registry import ATTACKS
        from spikeguard.models import MODELS
        from spikeguard.snn import ENCODERS

        for name, value, allowed in (("model", self.model, MODELS), ("defense", self.defense, DEFENSES),
                                     ("encoder", self.encoder, ENCODERS), ("attack", self.attack, ATTACKS)):
            if value is not None and value not in allowed:
                raise UserError(f"unknown {name} '{value}'; choose from {', '.join(allowed)}")
        for name in ("lamb", "eps", "beta", "weight_decay", "momentum"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name} must be a non-negative number, got {value}")
        for name in ("h", "lr", "alpha"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number, got {value}")
        for name in ("steps", "time_steps", "epochs", "batch_size", "grad_stats_batch"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.tau <= 1:
            raise UserError(f"tau must lie in (0, 1], got {self.tau}")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.defense in ("sr", "sr_star", "gr") and self.lamb == 0:
            raise UserError(f"defense '{self.defense}' needs a positive lamb (its penalty weight)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def coerce_field(name: str, value: Any, annotation: str) -> Any:
    """Check one YAML or flag value against its field's type; accept "8/255" for floats."""
    if value is None:
        if "None" in annotation:
            return None
        raise UserError(f"config field '{name}' may not be empty")
    if annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise UserError(f"config field '{name}' must be true or false, got {value!r}")
    if annotation.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config field '{name}' must be an integer, got {value!r}")
    if annotation.startswith("float"):
        if isinstance(value, str):
            try:
                num, _, den = value.replace(" ", "").partition("/")
                value = float(num) / float(den) if den else float(num)
            except (ValueError, ZeroDivisionError):
                raise UserError(f"config field '{name}' must be a number such as 0.03 or 8/255, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"config field '{name}' must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise UserError(f"config field '{name}' must be a string, got {value!r}")


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Fields from ``values`` over ``base``; unknown keys and wrong types are UserErrors."""
    known = {f.name: f.type for f in fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
    cfg = dataclasses.replace(base or TrainConfig())
    for key, value in values.items():
        setattr(cfg, key, coerce_field(key, value, str(known[key])))
    return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"config file '{path}' must hold a mapping of field: value")
    return values
