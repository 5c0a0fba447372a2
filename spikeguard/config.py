"""The training configuration: one dataclass, read from YAML and/or flags, checked before any work."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from spikeguard.data.registry import DATASET_REGISTRY
from spikeguard.defenses.registry import ATTACKS, DEFENSE_SETTINGS, DEFENSES
from spikeguard.errors import UserError
from spikeguard.models.registry import MODELS, NETWORKS
from spikeguard.runtime import check_device
from spikeguard.snn.registry import ENCODERS, parse_training_estimator

# The data sets' defaults (model, eps, time steps, image or event) are their registered facts
# (spikeguard/data/registry.py); the defenses' rules theirs (spikeguard/defenses/registry.py).

NAN_POLICIES = ("abort", "skip", "rollback")
DATA_OPTIONS = ("data_dir", "download", "val_fraction", "augment", "dvs")  # apply where the loader takes them
SPIKING_ONLY = ("train_estimator", "tau")  # settings of spiking neurons: none applies to network 'ann'
# Fields a resumed run may change: none of them alters the trajectory of the weights (epochs stretches the
# schedule, see spikeguard.training.resume).
RESUME_FIELDS = ("epochs", "device", "data_dir", "download", "nan_policy", "rollback_lr_factor", "max_rollbacks",
                 "checkpoint_every", "keep_checkpoints", "channels_last", "compile")
# settings of a model spikeguard builds: none applies to one a model function builds (model_fn). "model" is not
# among them: a plan or config naming both is refused, not silently reduced to one (TrainConfig.validated)
BUILT_MODEL_ONLY = ("time_steps", "tau", "train_estimator", "network", "encoder")
H_MIN = 1e-3
LAMB_MAX = 100.0
# Inclusive ranges beyond the type and sign checks: values outside them are typing slips or make garbage (why).
RANGES: dict[str, tuple[float, float, str]] = {
    "h": (H_MIN, 1.0, "; a smaller SR step flips almost no spike: the penalty is 0 or 1/h^2 (docs/reliability.md)"),
    "lamb": (0.0, LAMB_MAX, "; larger weights swamp the cross-entropy (docs/reliability.md)"),
    "eps": (0.0, 1.0, " (pixel scale)"),
    "alpha": (0.0, 1.0, " (pixel scale)"),
    "gr_lamb": (0.0, LAMB_MAX, "; larger weights swamp the cross-entropy (docs/reliability.md)"),
    "rat_beta": (0.0, 1.0, ""),
    "kd_temperature": (0.1, 100.0, ""),
    "kd_alpha": (0.0, 1.0, ""),
    "lr": (0.0, 10.0, ""),
    "weight_decay": (0.0, 1.0, ""),
    "steps": (1, 1000, ""),
    "time_steps": (1, 1024, ""),
    "epochs": (1, 100_000, ""),
    "batch_size": (1, 65_536, ""),
    "grad_stats_batch": (1, 65_536, ""),
    "seed": (0, 2**32 - 1, ""),  # the digits split hands the seed to scikit-learn, which takes 32 bits
    "checkpoint_every": (0, 10**9, " (0: checkpoint at epoch ends only)"),
    "keep_checkpoints": (1, 100, ""),
    "max_rollbacks": (0, 100, ""),
}


@dataclass
class TrainConfig:
    dataset: str = "digits"
    model: str | None = None          # None: the data set's default model
    model_fn: str | None = None       # "package.module:function" building any nn.Module instead (model unused)
    defense: str = "vanilla"
    lamb: float | None = None         # weight of the SR or GR penalty; None: validated_lamb's, else 0
    h: float = 0.01                   # SR finite-difference step
    eps: float | None = None          # adversarial-training radius (pixel scale); None: the data set's default_eps
    alpha: float | None = None        # PGD step; None: 2.5 * eps / steps
    steps: int = 7                    # PGD steps for AT / SR*
    attack: str = "pgd"               # example generator for AT / SR*: fgsm or pgd
    gr_lamb: float | None = None      # GR's weight where SR's lamb is the other (sr_gr); None: the GR lamb
    #                                   validated on the data set (validated_lamb), else 0 (refused)
    rat_beta: float = 0.004           # RAT retraction strength (was "beta"; snnTorch's beta is a leak)
    teacher: list[str] | None = None  # sr_distill: checkpoints or run directories (several: their logits averaged)
    kd_temperature: float = 4.0       # sr_distill: the softmax temperature of the distillation term
    kd_alpha: float = 0.9             # sr_distill: the distillation term's weight (the cross-entropy's is 1 - it)
    time_steps: int | None = None     # None: 8 for images, the frame count (dvs.frames, default 10) for event data
    tau: float = 1.0
    train_estimator: str = "triangle:1"  # the backward estimator training uses (family or family:width)
    network: str = "snn"              # snn | ann: the ANN twin (ReLU for spikes, one time step) trains instead
    encoder: str = "direct"           # event data sets: "frames" (set automatically)
    dvs: dict | None = None           # CIFAR10-DVS options (spikeguard.data.dvs_options.DvsOptions); frames = time_steps
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
    checkpoint_every: int = 500       # also checkpoint every this many steps within an epoch; 0: epoch ends only
    keep_checkpoints: int = 2         # last.pt and the K - 1 before it (last.1.pt, ...); best.pt besides
    nan_policy: str = "abort"         # on NaN/inf loss or gradients: abort | skip | rollback (docs/reliability.md)
    rollback_lr_factor: float = 0.5   # rollback: multiply the learning rate by this after each rollback
    max_rollbacks: int = 3            # rollback: abort after this many
    sync_bn: bool = False             # under torchrun: BatchNorm statistics over all processes (CUDA only)
    bf16: bool = False                # bf16 autocast (spikeguard/speed.py; refused for sr and sr_star)
    channels_last: bool = False       # channels_last memory layout
    compile: str = "none"             # torch.compile: none | model | neurons (refused for gr)
    tf32: bool = False                # allow TF32 matmuls and convolutions on CUDA

    def resolved(self) -> TrainConfig:
        """A copy with the data-set defaults filled in and every field checked."""
        cfg = dataclasses.replace(self)
        for f in fields(cfg):  # types first: a TrainConfig built in Python gets the same checks as YAML
            setattr(cfg, f.name, coerce_field(f.name, getattr(cfg, f.name), str(f.type)))
        data = DATASET_REGISTRY.get(cfg.dataset)
        if cfg.model is None and cfg.model_fn is None:
            cfg.model = data.default_model
        if cfg.eps is None:
            cfg.eps = data.default_eps
        if cfg.lamb is None:  # the documented default, for the CLI, study plans and training.train alike
            cfg.lamb = validated_lamb(cfg.dataset, cfg.defense, cfg.network) or 0.0
        if cfg.gr_lamb is None:
            cfg.gr_lamb = validated_lamb(cfg.dataset, "gr") or 0.0
        event = data.kind == "event"
        cfg._check_network(event)
        cfg.train_estimator = parse_training_estimator(cfg.train_estimator).name  # one spelling per estimator
        if cfg.network == "ann" and not event:
            cfg.time_steps = 1  # a ReLU network on images has one step; event frames keep one step per frame
        if cfg.time_steps is None:  # event data: one frame per step, dvs.frames if given
            cfg.time_steps = (cfg.dvs or {}).get("frames", data.time_steps) if event else data.time_steps
        if event and cfg.encoder == "direct":
            cfg.encoder = "frames"  # event frames carry their own time axis; "direct" is the image default
        if cfg.alpha is None:  # from a bad eps or steps too, so that check() names the field the user gave
            cfg.alpha = 2.5 * cfg.eps / cfg.steps if cfg.steps > 0 and 0 <= cfg.eps <= 1 else cfg.eps
        cfg.check()
        return cfg

    def check(self) -> None:
        """Every field's range and name (types are checked by resolved()), so a run never starts on a value
        it would fail on later."""
        parse_training_estimator(self.train_estimator)
        for name, value, allowed in (("network", self.network, NETWORKS),
                                     ("dataset", self.dataset, DATASET_REGISTRY), ("model", self.model, MODELS),
                                     ("defense", self.defense, DEFENSES), ("encoder", self.encoder, ENCODERS),
                                     ("attack", self.attack, ATTACKS), ("nan_policy", self.nan_policy, NAN_POLICIES)):
            if value is not None and value not in allowed:
                raise UserError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        for name in ("lamb", "gr_lamb", "eps", "rat_beta", "weight_decay", "momentum"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name} must be a non-negative number, got {value}")
        for name in ("h", "lr", "alpha"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number, got {value}")
        for name in ("eps", "alpha"):
            check_linf_eps(getattr(self, name), name)
        for name, (low, high, why) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not (low <= value <= high and (isinstance(value, int) or math.isfinite(value))):
                raise UserError(f"{name} must lie in [{low:g}, {high:g}], got {value:g}{why}")
        if not 0 < self.tau <= 1:
            raise UserError(f"tau must lie in (0, 1], got {self.tau}")
        for name in ("val_fraction", "rollback_lr_factor"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if not self.momentum < 1:
            raise UserError(f"momentum must be below 1, got {self.momentum}")
        if self.model_fn is not None:
            module, colon, function = self.model_fn.partition(":")
            if not (module and colon and function):
                raise UserError(f"model_fn '{self.model_fn}' must look like package.module:function")
            if self.model is not None:
                raise UserError("give model (a registered architecture) or model_fn (a function building any "
                                "nn.Module), not both")
        defense = DEFENSES.get(self.defense)
        if defense.needs_lamb and self.lamb == 0:
            raise UserError(f"defense '{self.defense}' needs a positive lamb (its penalty weight); none has been "
                            f"validated for {self.dataset}, so give --lamb")
        if self.applies("teacher") and not self.teacher:
            raise UserError(f"defense '{self.defense}' needs --teacher: one or more checkpoints or run directories "
                            "(of the same data set) whose logits the student learns from")
        if self.teacher and not self.applies("teacher"):
            raise UserError(f"--teacher is for defense sr_distill, not '{self.defense}'")
        if self.applies("gr_lamb") and not self.gr_lamb:
            raise UserError(f"defense '{self.defense}' needs a positive gr_lamb (the GR penalty's weight); none has "
                            f"been validated for {self.dataset}, so give --gr-lamb")
        self._check_event_data()
        check_device(self.device)
        if self.data_dir is not None and ("\0" in self.data_dir or not self.data_dir.strip()):
            raise UserError(f"data_dir must be a path, got {self.data_dir!r}")
        self.speed_options().check(defense=self.defense)
        if self.sync_bn and defense.refuses_sync_bn:
            raise UserError(f"--sync-bn cannot be used with defense '{self.defense}': {defense.refuses_sync_bn}")

    def _check_network(self, event: bool) -> None:
        """Network 'ann' has no spiking neurons: a spiking setting given with it contradicts it (refused,
        so no grid cell claims an estimator or leak it did not use)."""
        if self.network not in NETWORKS:
            raise UserError(f"unknown network {self.network!r}; choose from {', '.join(NETWORKS)}")
        if self.network != "ann":
            return
        default = TrainConfig()
        for name in SPIKING_ONLY:
            value, unset = getattr(self, name), getattr(default, name)
            same = (parse_training_estimator(value).name == parse_training_estimator(unset).name
                    if name == "train_estimator" else value == unset)
            if not same:
                raise UserError(f"{name} applies to spiking networks only, not network 'ann' (ReLU units, exact "
                                f"gradients); leave it out or train network 'snn'")
        if not event and self.time_steps not in (None, 1):
            raise UserError(f"network 'ann' on image data runs one time step, got time_steps {self.time_steps}; "
                            "leave it out")

    def _check_event_data(self) -> None:
        """Event data sets need the frames encoder and a frame per time step; image data sets neither."""
        if DATASET_REGISTRY.facts(self.dataset)["kind"] == "event":
            if self.encoder != "frames":
                raise UserError(f"dataset {self.dataset!r} feeds event frames one per time step: encoder must be "
                                f"'frames', got {self.encoder!r}")
            frames = (self.dvs or {}).get("frames", self.time_steps)
            if frames != self.time_steps:
                raise UserError(f"dvs.frames ({frames}) must equal time_steps ({self.time_steps}): one frame per step")
            from spikeguard.data.dvs_options import DvsOptions

            DvsOptions.from_dict(dvs_options(self.to_dict()))
        else:
            if self.encoder == "frames":
                raise UserError(f"encoder 'frames' is for event data sets ({', '.join(_event_datasets())}), "
                                f"not {self.dataset!r}")
            if self.dvs:
                raise UserError(f"the dvs options apply to {', '.join(_event_datasets())} only, not {self.dataset!r}")

    def speed_options(self):
        """The one-device speed settings (spikeguard.speed.SpeedOptions)."""
        from spikeguard.speed import SpeedOptions

        return SpeedOptions(bf16=self.bf16, channels_last=self.channels_last, compile=self.compile, tf32=self.tf32)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applies(self, name: str) -> bool:
        """Whether field ``name`` means anything for this run: a defense-specific setting only for the
        defenses that read it, a data-loading option only for the data sets whose loader takes it (the
        registries' facts), a spiking neuron's setting only for network 'snn' (and T for an ANN on event
        frames only)."""
        if self.model_fn is not None and name in BUILT_MODEL_ONLY:  # the user's function builds the model
            return False
        if name in DEFENSE_SETTINGS:
            used = DEFENSES.facts(self.defense).get("settings")
            return used is None or name in used
        if name in DATA_OPTIONS:
            return name in DATASET_REGISTRY.facts(self.dataset)["loader_options"]
        if name in SPIKING_ONLY:
            return self.network != "ann"
        if name == "time_steps" and self.network == "ann":  # an ANN on images runs one step; frames keep theirs
            return DATASET_REGISTRY.facts(self.dataset)["kind"] == "event"
        return True

    def to_record(self) -> dict[str, Any]:
        """What config.yaml holds: the fields that apply to this run (the others take their defaults on
        load, which is all they could be)."""
        return {k: v for k, v in self.to_dict().items() if self.applies(k)}


def eps_hint(value: float) -> str:
    """"; did you mean 8/255?" for a radius that reads like a count of grey levels, else ""."""
    return f"; did you mean {value:g}/255 (= {value / 255:.4g})?" if 1 < value <= 255 else ""


def check_linf_eps(value: Any, name: str = "eps") -> Any:
    """An l-inf radius (or step) above 1 on inputs in [0, 1] (or eps relative to a frame range) covers the
    whole input range: refused with the likely meant value. l2 radii do not come here."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 1:
        raise UserError(f"{name} {value:g} is above 1, but l-inf radii are in pixel scale: inputs lie in [0, 1] "
                        f"(event frames: relative to the frame range){eps_hint(value)}")
    return value


@functools.cache  # read once: the CLI's help asks it for every data set and defense at import (callers only read)
def validated_choices(dataset: str) -> dict[str, Any]:
    """What was chosen on ``dataset``'s validation split ({} where nothing was): digits' by the demo's
    selection (spikeguard/demo_selection.json, whose ``lamb`` stands for every penalty), the others' by their
    selection scripts (spikeguard/validated_settings.json, ``lamb_<defense>`` for each validated defense)."""
    from importlib import resources

    package = resources.files("spikeguard")
    if dataset == "digits":
        return json.loads(package.joinpath("demo_selection.json").read_text())["chosen"]
    return json.loads(package.joinpath("validated_settings.json").read_text()).get(dataset, {})


def validated_lamb(dataset: str, defense: str, network: str = "snn") -> float | None:
    """The penalty weight validated for ``defense`` on ``dataset``, where one was; None elsewhere. The ANN twin
    takes its own choice (``lamb_<defense>_ann``) where its selection made one, else the spiking network's."""
    if defense not in DEFENSES or not DEFENSES.facts(defense)["needs_lamb"]:
        return None
    chosen = validated_choices(dataset)
    lamb = chosen.get(f"lamb_{defense}_{network}", chosen.get(f"lamb_{defense}", chosen.get("lamb")))
    return None if lamb is None else float(lamb)


def dvs_options(config: dict[str, Any]) -> dict[str, Any] | None:
    """The event-data options a stored or live config gives load_dataset (None for image data sets):
    its dvs mapping, with one frame per time step."""
    dataset = config.get("dataset")
    if dataset not in _event_datasets():
        return None
    frames = config.get("time_steps") or DATASET_REGISTRY.facts(dataset)["time_steps"]
    return {**(config.get("dvs") or {}), "frames": frames}


def _event_datasets() -> tuple[str, ...]:
    return DATASET_REGISTRY.names(kind="event")


def coerce_field(name: str, value: Any, annotation: str) -> Any:
    """Check one YAML or flag value against its field's type; accept "8/255" for floats."""
    if value is None:
        if "None" in annotation:
            return None
        raise UserError(f"config field '{name}' may not be empty")
    if annotation.startswith("list[str]"):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
            return list(value)
        raise UserError(f"config field '{name}' must be a path or a list of paths, got {value!r}")
    if annotation.startswith("dict"):
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise UserError(f"config field '{name}' must be a mapping of option: value, got {value!r}")
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
            except (ValueError, ZeroDivisionError, OverflowError):
                raise UserError(f"config field '{name}' must be a number such as 0.03 or 8/255, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond float range
                raise UserError(f"config field '{name}' is out of range, got {value!r}") from None
        raise UserError(f"config field '{name}' must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise UserError(f"config field '{name}' must be a string, got {value!r}")


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Fields from ``values`` over ``base``; unknown keys and wrong types are UserErrors."""
    known = {f.name: f.type for f in fields(TrainConfig)}
    values = renamed_keys(values)
    unknown = sorted(k if isinstance(k, str) and k.isprintable() else repr(k) for k in values if k not in known)
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
    cfg = dataclasses.replace(base or TrainConfig())
    for key, value in values.items():
        setattr(cfg, key, coerce_field(key, value, str(known[key])))
    return cfg


# Keys renamed since configs were first written: old config.yaml files, --config files and checkpoints'
# stored configs still load. RAT's "beta" became "rat_beta" (snnTorch's beta is a membrane leak).
RENAMED = {"beta": "rat_beta"}


def renamed_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with old key names replaced by the current ones; both at once is a UserError."""
    out = dict(values)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise UserError(f"config key '{old}' is the old name of '{new}'; give only '{new}'")
            out[new] = out.pop(old)
    return out


KeyLines = dict[tuple, int]  # a key's path in the document (mapping keys and list indices) -> its line, from 1


def read_yaml(path: str | Path, what: str, lines: KeyLines | None = None) -> Any:
    """A YAML file's content; a missing, unreadable, non-text or invalid file is a one-line UserError naming
    ``what``. The one YAML reader: config files, plans, suites and run directories' config.yaml. With
    ``lines`` (a dict) it is filled with each key's line (the node tree is composed once, then constructed),
    so a message about a key can say where it is."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist")
    try:
        if lines is None:
            return yaml.safe_load(path.read_text())
        loader = yaml.SafeLoader(path.read_text())  # what safe_load does, keeping the node tree for its lines
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise UserError(f"{what} '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} '{path}' is not text") from None
    except OSError as e:  # unreadable: permissions, a vanished network file
        raise UserError(f"{what} '{path}' cannot be read ({e.strerror or type(e).__name__})") from None
    if node is not None:
        _key_lines(node, (), lines)
    return data


def _key_lines(node: yaml.Node, where: tuple, lines: KeyLines) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*where, key.value if isinstance(key, yaml.ScalarNode) else None)
            lines.setdefault(path, key.start_mark.line + 1)
            _key_lines(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _key_lines(item, (*where, index), lines)


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    values = read_yaml(path, "config file")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"config file '{path}' must hold a mapping of field: value")
    return values
