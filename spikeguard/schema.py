"""The results vocabulary: what an evaluation writes to results.json and to the per-sample CSV beside it, as
typed records, and the one reader that upgrades every results.json spikeguard has ever written.

Public API (no PyTorch needed):

* ``SCHEMA_VERSION``: written into every results.json as ``"schema_version"``.
* ``FlagName``: the name of every sanity flag, defined once; ``UNTRUSTING``: the flags after which the
  gradient cannot be trusted (they start the escalation and make the headline "not a bound").
* ``Flag`` (name, detail), ``NotApplicable`` (name, why), ``Headline`` (accuracy, is_bound, label, why, tried),
  ``AttackResult`` (one entry of "attacks"), ``EscalationRecord``, ``GradientCheck``, ``UnboundedCheck``.
* ``EvalRecord``: results.json's content; ``to_json()`` gives the dict written, ``EvalRecord.from_json(d)``
  reads a current one. ``record.all_attacks()`` adds the escalation's cumulative entries.
* ``SampleOutcome`` (one per-sample row: clean correct, robust, broken_by, zero_gradient as a list, and per
  attack an ``AttackOutcome``: its worst-case score, the member that reached it, each member's score and a
  random attack's mean over draws). ``to_row()`` / ``from_row()``: the CSV's flat "label|member" columns,
  which appear nowhere else.
* ``read_results(path_or_dict) -> EvalRecord``: THE reader; upgrades every older format listed below.
  ``results_version(dict)``: the format of a JSON object (None: not a results file).
* ``read_samples(path)`` / ``write_samples(path, samples)``: the per-sample CSV.

Format versions (docs/results-schema.md has the commits and what each reader does with them):

0. before the attack suites (07ffd86): robust_accuracy {attack: accuracy}, worst_case_accuracy, broken_by
   counts, attack settings; no per-sample CSV. Upgraded: attacks from robust_accuracy (estimators from
   "attack"), ensemble_accuracy = worst_case_accuracy; no flags were checked, so ``flags`` is None.
1. attack suites (9e51ccf): attacks, ensemble_accuracy, flags, gradient_check, unbounded_accuracy, per_sample,
   suite_spec and provenance. (da37e79 later changed what an attack's "estimators" lists, from the suite's
   members to those that ran, and which attack a row's broken_by names; the keys stayed.)
2. distributed evaluation (a469dfb): "ranks". Upgraded files before it ran in one process: ranks = 1.
3. threat models (ff58061): threat_model, unbounded_check, flags_not_applicable; later without a new key
   set budget_sweep (69374eb, events-l0), estimator_bank and external_model (8252550, library models).
   Upgraded files before it are image l-inf: threat_model None, read as linf.
4. trust (c9e8ab6): headline, escalation, ensemble_accuracy_before_escalation; 0d843ac added the escalation's
   estimated-gradient attack (three attacks, not two); 7eb77e0 imported_checkpoint. Files before it have no
   headline (None: nothing says whether their number is a bound).
5. this schema (issue 20): "schema_version"; nothing else changed, so a version-4 file reads as it is.

Every field a later change adds goes through this module: a new field here, SCHEMA_VERSION + 1, a line
above and a fixture in tests/fixtures/results/.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.files import write_text

SCHEMA_VERSION = 5


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


# The flags after which the gradient cannot be trusted: each starts the escalation.
UNTRUSTING = (FlagName.ZERO_GRADIENT, FlagName.BLACK_BOX_BEATS_WHITE_BOX, FlagName.UNBOUNDED_EPS_NOT_ZERO,
              FlagName.GRAD_MODE_DEPENDENCE)


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


# ---- results.json ----------------------------------------------------------------------------------------

# Keys the writer leaves out when they have no value (the rest are written, as null if need be).
_OMITTED_WHEN_NONE = ("eps_sweep", "budget_sweep", "escalation", "ensemble_accuracy_before_escalation",
                      "estimator_bank", "external_model", "imported_checkpoint", "per_sample")


@dataclass
class EvalRecord:
    """results.json's content. Accuracies are fractions in [0, 1]; fields a file's version lacks are None."""

    model: str | None = None
    dataset: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
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


# ---- the one reader ---------------------------------------------------------------------------------------

def results_version(data: Any) -> int | None:
    """The format version of a JSON object read from a results file; None when it is not one."""
    if not isinstance(data, dict):
        return None
    if "schema_version" in data:
        version = data["schema_version"]
        return version if isinstance(version, int) and not isinstance(version, bool) else None
    if isinstance(data.get("attacks"), list) and "clean_accuracy" in data:
        if "headline" in data:
            return 4
        if "threat_model" in data:
            return 3
        return 2 if "ranks" in data else 1
    if isinstance(data.get("robust_accuracy"), dict) and "worst_case_accuracy" in data:
        return 0
    return None


def read_results(source: str | Path | dict) -> EvalRecord:
    """The results file at ``source`` (a path, or its JSON already read) as an EvalRecord, upgraded from any
    older version. A file that is not a results file, or one from a newer spikeguard, is one UserError line."""
    where = "the results" if isinstance(source, dict) else f"'{source}'"
    data = source if isinstance(source, dict) else _read_json(Path(source))
    version = results_version(data)
    if version is None:
        raise UserError(f"{where} is not a spikeguard results file (no clean_accuracy and attacks, no "
                        "schema_version)")
    if version > SCHEMA_VERSION:
        raise UserError(f"{where} has results schema version {version}, newer than this spikeguard's "
                        f"({SCHEMA_VERSION}): upgrade spikeguard to read it")
    if version == 0:
        data = _from_version_0(data)
    data = {k: v for k, v in data.items() if k != "schema_version"}
    try:
        record = EvalRecord.from_json(data)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"{where} is a malformed results file ({type(e).__name__}: {str(e)[:100]})") from None
    record.upgraded_from = version if version < SCHEMA_VERSION else None
    return record


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"results file '{path}' cannot be read as JSON ({type(e).__name__})") from None


def _from_version_0(data: dict) -> dict:
    """Before the suites: FGSM and PGD, each the worst case over one list of estimators."""
    settings = data.get("attack") or {}
    estimators = list(settings.get("estimators") or [])
    seconds = data.get("seconds") or {}
    attacks = [{"name": name, "attack": name, "norm": "linf", "eps": data.get("eps"),
                "params": {"steps": settings.get("pgd_steps"), "alpha": settings.get("pgd_alpha")}
                if name == "pgd" else {}, "estimators": estimators, "accuracy": accuracy,
                "accuracy_per_estimator": {}, "seconds": round(float(seconds.get(name, 0.0)), 3)}
               for name, accuracy in data["robust_accuracy"].items()]
    kept = {k: v for k, v in data.items() if k not in ("robust_accuracy", "worst_case_accuracy", "seconds")}
    return {**kept, "attacks": attacks, "ensemble_accuracy": data["worst_case_accuracy"],
            "seconds": round(sum(float(s) for s in seconds.values()), 3) if isinstance(seconds, dict) else seconds,
            "notes": ["results file from before the attack suites (schema version 0): no flags were checked"]}


# ---- the per-sample rows ----------------------------------------------------------------------------------

_SEP = "|"  # "label|member" in the CSV's column names
_BY, _MEAN = "broken_by", "mean"
CSV_FIRST = ["index", "label", "clean_correct", "robust", "broken_by"]


@dataclass
class AttackOutcome:
    """One attack on one sample: its worst case over its members (score), the member that reached it, each
    member's score (cumulative within a cascade), and a random attack's mean over its draws."""

    score: float | None = None
    broken_by: str = ""
    members: dict[str, float] = field(default_factory=dict)
    mean: float | None = None


@dataclass
class SampleOutcome:
    """One per-sample row. Scores are the fraction of draws classified correctly (0 or 1 when deterministic)."""

    index: int
    label: int
    clean_correct: float
    zero_gradient: list[str] = field(default_factory=list)  # members with an exactly zero input gradient
    attacks: dict[str, AttackOutcome] = field(default_factory=dict)  # by attack label, in suite order
    robust: float | None = None   # the worst case over every attack (None until the attacks are combined)
    broken_by: str = ""           # "attack/member" that reached it first, "clean" when clean-wrong, else ""

    def attack(self, label: str) -> AttackOutcome:
        """The outcome of attack ``label``, started empty when it has none yet."""
        return self.attacks.setdefault(label, AttackOutcome())

    def score(self, label: str) -> float:
        return self.attacks[label].score

    def to_row(self, lists: bool = False) -> dict:
        """The flat row of the CSV ("label", "label|member", "label|broken_by", "label|mean" columns); with
        ``lists`` zero_gradient stays a list (JSON), else it is space-joined (the CSV's cell)."""
        row: dict[str, Any] = {"index": self.index, "label": self.label, "clean_correct": self.clean_correct,
                               "zero_gradient": list(self.zero_gradient) if lists else " ".join(self.zero_gradient)}
        for label, outcome in self.attacks.items():
            if outcome.mean is not None:
                row[label + _SEP + _MEAN] = outcome.mean
            row.update({label + _SEP + member: value for member, value in outcome.members.items()})
            row[label] = outcome.score
            row[label + _SEP + _BY] = outcome.broken_by
        if self.robust is not None:
            row["robust"], row["broken_by"] = self.robust, self.broken_by
        return row

    @classmethod
    def from_row(cls, row: dict) -> SampleOutcome:
        """A row of to_row (or of the CSV as read: numbers parsed, zero_gradient a string or a list)."""
        zero = row.get("zero_gradient") or []
        sample = cls(int(row["index"]), int(row["label"]), float(row["clean_correct"]),
                     zero.split() if isinstance(zero, str) else list(zero),
                     robust=None if row.get("robust") is None else float(row["robust"]),
                     broken_by=row.get("broken_by") or "")
        for key, value in row.items():
            if key in CSV_FIRST or key == "zero_gradient":
                continue
            label, _, member = key.partition(_SEP)
            outcome = sample.attack(label)
            if not member:
                outcome.score = float(value)
            elif member == _BY:
                outcome.broken_by = value or ""
            elif member == _MEAN:
                outcome.mean = float(value)
            else:
                outcome.members[member] = float(value)
        return sample


def write_samples(path: Path, samples: list[SampleOutcome]) -> None:
    """The per-sample CSV: CSV_FIRST, then every other column in row order; floats to 6 digits."""
    rows = [s.to_row() for s in samples]
    columns = CSV_FIRST + [k for k in (rows[0] if rows else {}) if k not in CSV_FIRST]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_samples(path: Path) -> list[SampleOutcome]:
    """The rows write_samples wrote (every version's CSV has this layout); UserError in one line for a
    missing or malformed file."""
    try:
        with open(path, newline="") as f:
            samples = [SampleOutcome.from_row(_parsed(row)) for row in csv.DictReader(f)]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"per-sample file '{path}' cannot be read ({type(e).__name__}: {str(e)[:100]})") from None
    if not samples:
        raise UserError(f"per-sample file '{path}' holds no rows")
    return samples


def _parsed(row: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            raise ValueError("a row has more cells than the header")
        if key in ("index", "label"):
            out[key] = int(value)
        elif key in ("broken_by", "zero_gradient") or key.endswith(_SEP + _BY):
            out[key] = value or ""
        else:
            out[key] = float(value)
    return out
