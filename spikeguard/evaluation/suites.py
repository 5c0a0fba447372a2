"""Attack suites: YAML files naming the attacks, their parameters and their backward estimators.

Shipped suites live in ``spikeguard/suites/`` (``configs/suites`` links there): ``paper`` reproduces the
published protocol, ``strong`` is the full bank, ``quick`` is small enough for CI and the demo. A suite is
a mapping:

    name: quick
    cascade: true          # within an attack, each estimator attacks only the samples still standing
    eot_draws: 20          # draws for gradients and accuracy, used when the model is stochastic
    attacks:
      - {attack: pgd, steps: 20, restarts: 1, estimators: quick}
      - {attack: square, queries: 300}
    transfer: {steps: 20, estimators: [triangle:1]}   # used with --source
    escalation: {substitute_epochs: 5, substitute_queries: 1000, transfer_steps: 20, estimate_steps: 20,
                 estimate_directions: 25, square_queries: 1000, square_restarts: 2}   # when a flag says
                 # the gradient cannot be trusted
    checks: {unbounded_n: 64, unbounded_steps: 20}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeguard.attacks.gradient import LOSSES
from spikeguard.attacks.registry import ATTACKS, TRANSFER, attack_kind
from spikeguard.config import read_yaml
from spikeguard.errors import UserError
from spikeguard.evaluation import bank
from spikeguard.evaluation.config import suite_path

# keys every suite entry may hold besides its attack's own parameters. survivors_only: attack only the
# samples every earlier attack left standing (cheaper; the attack's accuracy is then that of the ensemble
# up to it, and results say so)
_COMMON = ("attack", "label", "estimators", "norm", "eps", "survivors_only")
# column names of the per-sample rows that an attack label must not overwrite
RESERVED_LABELS = ("index", "label", "clean_correct", "robust", "broken_by", "zero_gradient", TRANSFER)


@dataclass(frozen=True)
class AttackSpec:
    attack: str
    label: str
    params: dict[str, Any]
    estimators: tuple[str, ...]   # empty for gradient-free attacks
    norm: str = "linf"            # "events" for whole-event edits (events-l0)
    eps: float | None = None      # an absolute radius for this attack; None: the evaluation's eps

    @property
    def kind(self):
        """The attack registry's entry: every fact about this attack kind."""
        return attack_kind(self.attack)

    @property
    def white_box(self) -> bool:
        return self.kind.gradient

    @property
    def random(self) -> bool:
        return self.kind.random


@dataclass(frozen=True)
class Suite:
    name: str
    attacks: tuple[AttackSpec, ...]
    cascade: bool = True
    eot_draws: int = 20
    transfer: dict[str, Any] = field(default_factory=lambda: {"steps": 20, "estimators": ("triangle:1",)})
    unbounded_n: int = 64
    unbounded_steps: int = 20
    escalation: dict[str, Any] = field(default_factory=lambda: dict(ESCALATION_DEFAULTS))
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)  # the mapping it was read from, kept in results


# What the evaluator adds when a flag says the gradient cannot be trusted (spikeguard/evaluation/escalation.py):
# two independent substitutes (a fresh SmallCNN distilled for substitute_epochs from the target's answers on
# substitute_queries training inputs, and one trained on those inputs' labels), each attacked with PGD and
# APGD-CE of transfer_steps; PGD on a gradient estimated from outputs (estimate_steps, 2 x estimate_directions
# queries a step, finite differences at estimate_sigma x eps: a spiking network's output is a step function of its
# input, so differences at a tenth of eps see mostly nothing; at eps they break as much as PGD on the true
# surrogate gradient did on the digits SNN of tests/traps.py: 6% against 4%, where 0.1 x eps left 35%); Square with square_queries x square_restarts; a decision-based attack with decision_queries
# (0: not run); each on the samples still standing. enabled: false turns it off (the headline is still "not a
# bound").
ESCALATION_DEFAULTS: dict[str, Any] = {
    "enabled": True, "substitute_epochs": 30, "substitute_queries": 5000, "transfer_steps": 50, "estimate_steps": 50,
    "estimate_directions": 64, "estimate_sigma": 1.0, "square_queries": 5000, "square_restarts": 2,
    "decision_queries": 5000}


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name, or a suite YAML file; UserError naming the problem otherwise."""
    path = suite_path(name_or_path)
    return suite_from_dict(read_yaml(path, "suite file"), source=str(path))


def suite_from_dict(data: Any, source: str = "<dict>") -> Suite:
    if not isinstance(data, dict):
        raise UserError(f"suite '{source}' is not a mapping")
    known = {"name", "description", "cascade", "eot_draws", "attacks", "transfer", "checks", "escalation"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"suite '{source}': unknown key(s) {unknown}; allowed: {sorted(known)}")
    entries = data.get("attacks")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"suite '{source}' lists no attacks")
    attacks = tuple(_attack(entry, source) for entry in entries)
    labels = [a.label for a in attacks]
    if len(set(labels)) != len(labels):
        raise UserError(f"suite '{source}': attack labels must be unique, got {labels}")
    clash = [lab for lab in labels if lab in RESERVED_LABELS or "|" in lab or "/" in lab or "," in lab]
    if clash:
        raise UserError(f"suite '{source}': attack label '{clash[0]}' is reserved or holds '|', '/' or ','")
    checks = data.get("checks") or {}
    if not isinstance(checks, dict) or set(checks) - {"unbounded_n", "unbounded_steps"}:
        raise UserError(f"suite '{source}': checks take unbounded_n and unbounded_steps only")
    transfer = data.get("transfer") or {}
    if not isinstance(transfer, dict) or set(transfer) - {"steps", "estimators"}:
        raise UserError(f"suite '{source}': transfer takes steps and estimators only")
    escalation = data.get("escalation") or {}
    if not isinstance(escalation, dict) or set(escalation) - set(ESCALATION_DEFAULTS):
        raise UserError(f"suite '{source}': escalation takes {', '.join(ESCALATION_DEFAULTS)} only")
    escalation = {**ESCALATION_DEFAULTS, **escalation}
    for key, value in escalation.items():
        what = f"escalation {key}"
        escalation[key] = (_bool(value, what, source) if key == "enabled" else _positive_float(value, what, source)
                           if key == "estimate_sigma" else _positive_int(value, what, source,
                                                                         allow_zero=key == "decision_queries"))
    return Suite(
        name=str(data.get("name") or Path(source).stem),
        attacks=attacks,
        cascade=_bool(data.get("cascade", True), "cascade", source),
        eot_draws=_positive_int(data.get("eot_draws", 20), "eot_draws", source),
        transfer={"steps": _positive_int(transfer.get("steps", 20), "transfer steps", source),
                  "estimators": bank.resolve(transfer.get("estimators", ["triangle:1"]))},
        unbounded_n=_positive_int(checks.get("unbounded_n", 64), "unbounded_n", source, allow_zero=True),
        unbounded_steps=_positive_int(checks.get("unbounded_steps", 20), "unbounded_steps", source),
        escalation=escalation,
        source=source,
        raw=data,
    )


def _attack(entry: Any, source: str) -> AttackSpec:
    if not isinstance(entry, dict) or "attack" not in entry:
        raise UserError(f"suite '{source}': each attack is a mapping with an 'attack' key, got {entry!r}")
    name = str(entry["attack"])
    listable = ATTACKS.names(in_suites=True)
    if name not in listable:
        raise UserError(f"suite '{source}': unknown attack '{name}'; choose from {', '.join(listable)}")
    kind = attack_kind(name)
    defaults = dict(kind.params)
    unknown = sorted(set(entry) - set(defaults) - set(_COMMON))
    if unknown:
        raise UserError(f"suite '{source}': attack '{name}' takes no {unknown}; allowed: {sorted(defaults)}")
    params = {**defaults, **{k: v for k, v in entry.items() if k in defaults}}
    for key, value in params.items():
        params[key] = _parameter(name, key, value, defaults[key], source)
    if "survivors_only" in entry:
        params["survivors_only"] = _bool(entry["survivors_only"], f"{name} survivors_only", source)
        if params["survivors_only"] and kind.gradient:
            # a white-box attack on survivors only would hide the cross-attack flags
            raise UserError(f"suite '{source}': survivors_only is for black-box and random attacks, not '{name}'")
    if kind.estimators:
        estimators = bank.resolve(entry.get("estimators", "paper"))
    elif "estimators" in entry:
        raise UserError(f"suite '{source}': '{name}' uses no gradients and takes no estimators")
    else:
        estimators = ()
    label = str(entry.get("label") or kind.label.format(**params))
    if "events" in kind.norms:
        if "norm" in entry or "eps" in entry:
            raise UserError(f"suite '{source}': '{name}' edits whole events within a budget; it takes no norm or eps")
        return AttackSpec(name, label, params, estimators, "events", None)
    norm = str(entry.get("norm", "linf"))
    if norm not in kind.norms:
        raise UserError(f"suite '{source}': attack '{name}' supports norm {' or '.join(kind.norms)}, not '{norm}'")
    eps = entry.get("eps")
    if eps is not None:
        eps = _positive_float(eps, f"{name} eps", source, allow_zero=True)
        if norm == "linf":  # l2 radii are not in pixel scale per entry: no such limit
            from spikeguard.config import check_linf_eps

            try:
                check_linf_eps(eps, f"{name} eps")
            except UserError as e:
                raise UserError(f"suite '{source}': {e}") from None
    if norm != "linf" and eps is None:
        raise UserError(f"suite '{source}': an {norm} attack needs its own 'eps' (the evaluation's eps is l-inf)")
    return AttackSpec(name, label, params, estimators, norm, eps)


# Parameters whose meaning is shared by every attack that takes them.
_COUNTS = ("steps", "restarts", "queries", "draws")   # integers >= 1
_FRACTIONS = ("alpha", "p_init")                       # positive numbers (alpha: a fraction of eps)


def _parameter(attack: str, key: str, value: Any, default: Any, source: str) -> Any:
    """One parameter checked by its name (the shared ones) or else by its default's type."""
    what = f"{attack} {key}"
    if value is None and default is None:
        return None
    if key == "loss":  # the losses a gradient attack may ascend, named in one place (attacks.gradient.LOSSES)
        if value not in LOSSES:
            raise UserError(f"suite '{source}': {what} must be one of {', '.join(LOSSES)}, got {value!r}")
        return value
    if key in _COUNTS or key == "budget" or (isinstance(default, int) and not isinstance(default, bool)):
        return _positive_int(value, what, source)
    if key in _FRACTIONS or isinstance(default, float):
        return _positive_float(value, what, source)
    if isinstance(default, bool):
        return _bool(value, what, source)
    return value


def _positive_int(value: Any, what: str, source: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise UserError(f"suite '{source}': {what} must be an integer >= {0 if allow_zero else 1}, got {value!r}")
    return value


def _positive_float(value: Any, what: str, source: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"suite '{source}': {what} must be a {'non-negative' if allow_zero else 'positive'} number, "
                        f"got {value!r}")
    return float(value)


def _bool(value: Any, what: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"suite '{source}': {what} must be true or false, got {value!r}")
    return value
