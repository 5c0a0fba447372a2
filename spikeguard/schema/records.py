"""results.json's records: the evaluation's record and its parts (spikeguard/schema/__init__.py lists the
versions)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 7


class FlagName:
    """Every sanity flag's name (spikeguard/evaluation/flags.py raises them; docs/evaluation.md says what each
    means)."""

    ZERO_GRADIENT = "zero_gradient"
    BLACK_BOX_BEATS_WHITE_BOX = "black_box_beats_white_box"
    ITERATIVE_WEAKER_THAN_SINGLE_STEP = "iterative_weaker_than_single_step"
    STOCHASTIC_WITHOUT_EOT = "stochastic_without_eot"
    UNBOUNDED_EPS_NOT_ZERO = "unbounded_eps_not_zero"
    ACCURACY_RISES_WITH_EPS = "accuracy_rises_with_eps"
    ACCURACY_RISES_WITH_BUDGET = "accuracy_rises_with_budget"
    ACCURACY_NOT_TOWARD_CHANCE = "accuracy_not_toward_chance"
    GRAD_MODE_DEPENDENCE = "grad_mode_dependence"
    # issue 21 (v7): the probes run before any attack (spikeguard/evaluation/probes.py and its modules)
    BACKWARD_DISAGREES = "backward_disagrees"      # a step along the gradient does not move the margin as it says
    FLAT_OUTPUTS = "flat_outputs"                  # logits that do not change under small random perturbations
    DEAD_SURROGATE = "dead_surrogate"              # a member's input gradient is exactly zero on most samples
    BATCH_DEPENDENT = "batch_dependent"            # outputs depend on the batch (intended by the user)


# The flags after which the gradient cannot be trusted: each starts the escalation.
UNTRUSTING = (FlagName.ZERO_GRADIENT, FlagName.BLACK_BOX_BEATS_WHITE_BOX, FlagName.UNBOUNDED_EPS_NOT_ZERO,
              FlagName.GRAD_MODE_DEPENDENCE, FlagName.BACKWARD_DISAGREES, FlagName.FLAT_OUTPUTS)


ESCALATION = "escalation"  # the "attack" of the escalation's entries in results.json


def _known(cls, data: dict) -> tuple[dict, dict]:
    """(the keys of ``data`` that are fields of ``cls``, the rest): unknown keys are kept, never dropped."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


@dataclass
class Flag:
    """A sign that the evaluation is weaker than it looks."""

    name: str
    detail: str

    @property
    def untrusting(self) -> bool:
        return self.name in UNTRUSTING

    def to_json(self) -> dict:
        return {"name": self.name, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict) -> Flag:
        return cls(str(data.get("name", "?")), str(data.get("detail", "")))


@dataclass
class NotApplicable:
    """A flag that could not fire in this evaluation, and why (so that no check is skipped silently)."""

    name: str
    why: str

    def to_json(self) -> dict:
        return {"name": self.name, "why": self.why}

    @classmethod
    def from_json(cls, data: dict) -> NotApplicable:
        return cls(str(data.get("name", "?")), str(data.get("why", "")))


@dataclass
class Headline:
    """The number to quote, and whether it is a bound: not when a flag says the gradient cannot be trusted."""

    accuracy: float
    is_bound: bool
    label: str
    why: list[str] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "is_bound": self.is_bound, "label": self.label, "why": list(self.why),
                "tried": list(self.tried)}

    @classmethod
    def from_json(cls, data: dict) -> Headline:
        bound = bool(data.get("is_bound", True))
        return cls(data["accuracy"], bound, str(data.get("label") or ("bound" if bound else "not a bound")),
                   list(data.get("why") or []), list(data.get("tried") or []))


@dataclass
class AttackResult:
    """One attack's entry in "attacks" (and the escalation's cumulative entries)."""

    name: str
    attack: str
    norm: str = "linf"
    eps: float | None = None
    params: dict = field(default_factory=dict)
    estimators: list[str] = field(default_factory=list)
    accuracy: float | None = None
    accuracy_per_estimator: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    budget: int | None = None        # events-l0: the event budget attacked (eps is None then)
    frame_range: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def cumulative(self) -> bool:
        """Its accuracy is the worst case so far, not its own: it attacked only what the earlier attacks left
        (survivors_only), or it is one of the escalation's entries."""
        return bool(self.params.get("survivors_only")) or self.attack == ESCALATION

    def to_json(self) -> dict:
        out = {"name": self.name, "attack": self.attack, "norm": self.norm, "eps": self.eps, "params": self.params,
               "estimators": list(self.estimators), "accuracy": self.accuracy,
               "accuracy_per_estimator": dict(self.accuracy_per_estimator), "seconds": self.seconds}
        if self.budget is not None or self.frame_range is not None:
            out.update(budget=self.budget, frame_range=self.frame_range)
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> AttackResult:
        known, extra = _known(cls, data)
        known.setdefault("attack", known.get("name", "?"))
        known.setdefault("name", known["attack"])
        for key in ("params", "accuracy_per_estimator"):
            known[key] = dict(known.get(key) or {})
        known["estimators"] = list(known.get("estimators") or [])
        return cls(**known, extra=extra)


@dataclass
class EscalationAttack:
    name: str
    what: str
    ran: bool

    def to_json(self) -> dict:
        return {"name": self.name, "what": self.what, "ran": self.ran}


@dataclass
class EscalationRecord:
    """What the escalation did when a flag said the gradient cannot be trusted (results.json's "escalation")."""

    why: list[str]                       # the flags' names that started it
    settings: dict
    attacks: list[EscalationAttack] = field(default_factory=list)
    substitute: dict = field(default_factory=dict)
    attacked_samples: int = 0
    seconds: float = 0.0
    results: list[AttackResult] = field(default_factory=list)  # cumulative accuracy after each attack

    def to_json(self) -> dict:
        return {"why": list(self.why), "settings": dict(self.settings), "attacks": [a.to_json() for a in self.attacks],
                "substitute": dict(self.substitute), "attacked_samples": self.attacked_samples,
                "seconds": self.seconds, "results": [r.to_json() for r in self.results]}

    @classmethod
    def from_json(cls, data: dict) -> EscalationRecord:
        return cls(list(data.get("why") or []), dict(data.get("settings") or {}),
                   [EscalationAttack(a.get("name", "?"), a.get("what", ""), bool(a.get("ran", True)))
                    for a in data.get("attacks") or []],
                   dict(data.get("substitute") or {}), int(data.get("attacked_samples") or 0),
                   float(data.get("seconds") or 0.0), [AttackResult.from_json(r) for r in data.get("results") or []])


@dataclass
class GradientCheck:
    zero_gradient_fraction: dict[str, float]  # per gradient member: clean-correct samples with a zero gradient
    all_zero_samples: int                     # ... zero under every member

    def to_json(self) -> dict:
        return {"zero_gradient_fraction": dict(self.zero_gradient_fraction), "all_zero_samples": self.all_zero_samples}


@dataclass
class UnboundedCheck:
    attack: str  # in words
    steps: int

    def to_json(self) -> dict:
        return {"attack": self.attack, "steps": self.steps}


@dataclass
class Probes:
    """What the probes measured before any attack (v7); each is a JSON object its probe module defines, None
    when that probe did not run. docs/evaluation.md ("Probes") says what each holds."""

    agreement: dict | None = None         # forward/backward agreement (evaluation/agreement.py)
    flat_outputs: dict | None = None      # logits under small random perturbations (evaluation/flat_outputs.py)
    batch_dependence: dict | None = None  # the same samples in two batch compositions (evaluation/batch_dependence.py)
    dead_surrogates: dict | None = None   # per member and spiking layer, exactly-zero derivatives (snn/dead_zone.py)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> Probes:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


# ---- results.json ----------------------------------------------------------------------------------------

# Keys the writer leaves out when they have no value (the rest are written, as null if need be).
_OMITTED_WHEN_NONE = ("checkpoint_epoch", "probes", "eps_sweep", "budget_sweep", "escalation", "ensemble_accuracy_before_escalation",
                      "estimator_bank", "external_model", "imported_checkpoint", "per_sample")


@dataclass
class EvalRecord:
    """results.json's content. Accuracies are fractions in [0, 1]; fields a file's version lacks are None."""

    model: str | None = None
    dataset: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_epoch: int | None = None  # the epochs trained into the checkpoint (v6); None: not recorded
    model_fn: str | None = None
    source: str | None = None
    suite: str | None = None
    eps: float | None = None
    threat_model: dict | None = None    # threat_models.ThreatModel.describe(); None: image l-inf (before v3)
    seed: int | None = None
    n: int = 0
    batch_size: int | None = None
    cascade: bool | None = None
    stochastic: bool | None = None
    eot_draws: int | None = None
    ranks: int = 1
    clean_accuracy: float | None = None
    attacks: list[AttackResult] = field(default_factory=list)
    ensemble_accuracy: float | None = None  # the per-sample worst case (after the escalation, when it ran)
    gradient_check: GradientCheck | None = None
    probes: Probes | None = None        # the probes before any attack (v7); None: none recorded
    unbounded_accuracy: float | None = None
    unbounded_check: UnboundedCheck | None = None
    eps_sweep: list[dict] | None = None
    budget_sweep: list[dict] | None = None
    escalation: EscalationRecord | None = None
    ensemble_accuracy_before_escalation: float | None = None
    headline: Headline | None = None
    flags: list[Flag] | None = None     # None: the file records no flags (version 0)
    flags_not_applicable: list[NotApplicable] | None = None
    estimator_bank: dict | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    suite_spec: dict | None = None
    code_version: Any = None
    libraries: dict | None = None
    device: str | None = None
    external_model: dict | None = None
    imported_checkpoint: dict | None = None
    per_sample: str | None = None       # the CSV's file name, beside results.json
    schema_version: int = SCHEMA_VERSION
    upgraded_from: int | None = field(default=None, compare=False)  # the version read, when older; not written
    extra: dict = field(default_factory=dict)  # keys of no version above, kept as they were

    # ---- what readers ask ----
    @property
    def threat_name(self) -> str:
        return str((self.threat_model or {}).get("name", "linf"))

    @property
    def event_budget(self) -> int | None:
        return (self.threat_model or {}).get("budget")

    @property
    def flag_names(self) -> list[str]:
        return [f.name for f in self.flags or []]

    def all_attacks(self) -> list[AttackResult]:
        """The suite's attacks, then the escalation's cumulative entries when it ran."""
        return self.attacks + (self.escalation.results if self.escalation else [])

    def headline_accuracy(self) -> float | None:
        """The number to quote: the headline's, else (files before version 4) the worst case."""
        return self.headline.accuracy if self.headline else self.ensemble_accuracy

    # ---- JSON ----
    def to_json(self) -> dict:
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            if f.name in ("schema_version", "upgraded_from", "extra"):
                continue
            value = getattr(self, f.name)
            if value is None and f.name in _OMITTED_WHEN_NONE:
                continue
            out[f.name] = _plain(value)
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> EvalRecord:
        """A results dict of the current layout (any older one: ``read_results``)."""
        known, extra = _known(cls, data)
        typed = {"attacks": lambda v: [AttackResult.from_json(a) for a in v],
                 "gradient_check": lambda v: GradientCheck(dict(v.get("zero_gradient_fraction") or {}),
                                                           int(v.get("all_zero_samples") or 0)),
                 "unbounded_check": lambda v: UnboundedCheck(str(v.get("attack", "")), int(v.get("steps") or 0)),
                 "escalation": EscalationRecord.from_json, "headline": Headline.from_json,
                 "probes": Probes.from_json,
                 "flags": lambda v: [Flag.from_json(f) for f in v],
                 "flags_not_applicable": lambda v: [NotApplicable.from_json(f) for f in v]}
        for key, make in typed.items():
            if known.get(key) is not None:
                known[key] = make(known[key])
        for key, default in (("n", 0), ("ranks", 1), ("notes", [])):
            if known.get(key) is None:
                known[key] = default
        known["schema_version"] = SCHEMA_VERSION
        return cls(**known, extra=extra)


def _plain(value):
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
