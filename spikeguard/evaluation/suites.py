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
    checks: {unbounded_n: 64, unbounded_steps: 20}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spikeguard.errors import UserError
from spikeguard.evaluation import bank

SUITE_DIR = Path(__file__).resolve().parent.parent / "suites"

# attack -> (its parameters with their defaults, whether it takes backward estimators)
ATTACKS: dict[str, tuple[dict[str, Any], bool]] = {
    "fgsm": ({}, True),
    "rfgsm": ({"alpha": 0.5}, True),                       # alpha as a fraction of eps
    "pgd": ({"steps": 10, "alpha": None, "restarts": 1, "random_start": True}, True),  # alpha: x eps per step
    "apgd-ce": ({"steps": 100, "restarts": 1}, True),
    "apgd-dlr": ({"steps": 100, "restarts": 1}, True),
    "apgd-t": ({"steps": 100, "restarts": 1}, True),
    "fab-t": ({"steps": 100, "restarts": 1}, True),
    "autoattack": ({}, True),
    "square": ({"queries": 5000, "restarts": 1, "p_init": 0.8}, False),
    "random-uniform": ({"draws": 10}, False),
    "random-sign": ({"draws": 10}, False),
    # events-l0 only (spikeguard/attacks/events.py); budget: events per sample, None = the evaluation's
    "sparse-events": ({"steps": 20, "budget": None}, True),
    "random-events": ({"draws": 10, "budget": None}, False),
}
SINGLE_STEP = ("fgsm", "rfgsm")
ITERATIVE = ("pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "autoattack")
RANDOM = ("random-uniform", "random-sign", "random-events")
EVENTS = ("sparse-events", "random-events")  # whole-event edits: norm "events", a budget instead of eps
BLACK_BOX = ("square", "transfer", *RANDOM)
LIBRARY_NORMS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "autoattack", "square")  # l2 offered there
# survivors_only: attack only the samples every earlier attack left standing (cheaper; the attack's
# accuracy is then that of the ensemble up to it, and results say so)
_COMMON = ("attack", "label", "estimators", "norm", "eps", "survivors_only")
# column names of the per-sample rows that an attack label must not overwrite
RESERVED_LABELS = ("index", "label", "clean_correct", "robust", "broken_by", "zero_gradient", "transfer")


@dataclass(frozen=True)
class AttackSpec:
    attack: str
    label: str
    params: dict[str, Any]
    estimators: tuple[str, ...]   # empty for gradient-free attacks
    norm: str = "linf"
    eps: float | None = None      # an absolute radius for this attack; None: the evaluation's eps

    @property
    def white_box(self) -> bool:
        return self.attack not in BLACK_BOX


@dataclass(frozen=True)
class Suite:
    name: str
    attacks: tuple[AttackSpec, ...]
    cascade: bool = True
    eot_draws: int = 20
    transfer: dict[str, Any] = field(default_factory=lambda: {"steps": 20, "estimators": ("triangle:1",)})
    unbounded_n: int = 64
    unbounded_steps: int = 20
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)  # the mapping it was read from, kept in results


def available() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name, or a suite YAML file; UserError naming the problem otherwise."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"unknown suite '{name_or_path}'; choose from {', '.join(available())} or give a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"suite file '{path}' cannot be read ({type(e).__name__})") from None
    return suite_from_dict(data, source=str(path))


def suite_from_dict(data: Any, source: str = "<dict>") -> Suite:
    if not isinstance(data, dict):
        raise UserError(f"suite '{source}' is not a mapping")
    known = {"name", "description", "cascade", "eot_draws", "attacks", "transfer", "checks"}
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
    return Suite(
        name=str(data.get("name") or Path(source).stem),
        attacks=attacks,
        cascade=_bool(data.get("cascade", True), "cascade", source),
        eot_draws=_positive_int(data.get("eot_draws", 20), "eot_draws", source),
        transfer={"steps": _positive_int(transfer.get("steps", 20), "transfer steps", source),
                  "estimators": bank.resolve(transfer.get("estimators", ["triangle:1"]))},
        unbounded_n=_positive_int(checks.get("unbounded_n", 64), "unbounded_n", source, allow_zero=True),
        unbounded_steps=_positive_int(checks.get("unbounded_steps", 20), "unbounded_steps", source),
        source=source,
        raw=data,
    )


def _attack(entry: Any, source: str) -> AttackSpec:
    if not isinstance(entry, dict) or "attack" not in entry:
        raise UserError(f"suite '{source}': each attack is a mapping with an 'attack' key, got {entry!r}")
    kind = str(entry["attack"])
    if kind not in ATTACKS:
        raise UserError(f"suite '{source}': unknown attack '{kind}'; choose from {', '.join(ATTACKS)}")
    defaults, takes_estimators = ATTACKS[kind]
    unknown = sorted(set(entry) - set(defaults) - set(_COMMON))
    if unknown:
        raise UserError(f"suite '{source}': attack '{kind}' takes no {unknown}; allowed: {sorted(defaults)}")
    params = {**defaults, **{k: v for k, v in entry.items() if k in defaults}}
    for key, value in params.items():
        if key in ("steps", "restarts", "queries", "draws"):
            params[key] = _positive_int(value, f"{kind} {key}", source)
        elif key in ("alpha", "p_init") and value is not None:
            params[key] = _positive_float(value, f"{kind} {key}", source)
        elif key == "budget" and value is not None:
            params[key] = _positive_int(value, f"{kind} budget", source)
        elif key == "random_start":
            params[key] = _bool(value, f"{kind} random_start", source)
    if "survivors_only" in entry:
        params["survivors_only"] = _bool(entry["survivors_only"], f"{kind} survivors_only", source)
        if params["survivors_only"] and kind not in BLACK_BOX:
            # a white-box attack on survivors only would hide the cross-attack flags
            raise UserError(f"suite '{source}': survivors_only is for black-box and random attacks, not '{kind}'")
    if kind in EVENTS:
        if "norm" in entry or "eps" in entry:
            raise UserError(f"suite '{source}': '{kind}' edits whole events within a budget; it takes no norm or eps")
        estimators = bank.resolve(entry.get("estimators", "paper")) if takes_estimators else ()
        if not takes_estimators and "estimators" in entry:
            raise UserError(f"suite '{source}': '{kind}' uses no gradients and takes no estimators")
        return AttackSpec(kind, str(entry.get("label") or kind), params, estimators, "events", None)
    norm = str(entry.get("norm", "linf"))
    if norm not in ("linf", "l2") or (norm == "l2" and kind not in LIBRARY_NORMS):
        raise UserError(f"suite '{source}': attack '{kind}' supports norm linf"
                        + (" or l2" if kind in LIBRARY_NORMS else "") + f", not '{norm}'")
    eps = entry.get("eps")
    if eps is not None:
        eps = _positive_float(eps, f"{kind} eps", source, allow_zero=True)
    if norm == "l2" and eps is None:
        raise UserError(f"suite '{source}': an l2 attack needs its own 'eps' (the evaluation's eps is l-inf)")
    if takes_estimators:
        estimators = bank.resolve(entry.get("estimators", "paper"))
    elif "estimators" in entry:
        raise UserError(f"suite '{source}': '{kind}' uses no gradients and takes no estimators")
    else:
        estimators = ()
    label = str(entry.get("label") or (f"{kind}-{params['steps']}" if kind == "pgd" else kind))
    return AttackSpec(kind, label, params, estimators, norm, eps)


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
