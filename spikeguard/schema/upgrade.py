"""The one reader of results.json: every version spikeguard has written (listed in spikeguard/schema/__init__.py),
upgraded to the current EvalRecord."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.schema.records import SCHEMA_VERSION, EvalRecord


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
    if version < 6:  # the checkpoint's epoch was not recorded: unknown, never guessed from the run
        data = {**data, "checkpoint_epoch": None}
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


# Version 0's attack settings ("attack": {"pgd_steps", "pgd_alpha", "estimators"}), per attack as params.
_VERSION_0_PARAMS = {"pgd": {"steps": "pgd_steps", "alpha": "pgd_alpha"}}


def _from_version_0(data: dict) -> dict:
    """Before the suites: FGSM and PGD, each the worst case over one list of estimators."""
    settings = data.get("attack") or {}
    estimators = list(settings.get("estimators") or [])
    seconds = data.get("seconds") or {}
    attacks = [{"name": name, "attack": name, "norm": "linf", "eps": data.get("eps"),
                "params": {param: settings.get(key) for param, key in _VERSION_0_PARAMS.get(name, {}).items()},
                "estimators": estimators, "accuracy": accuracy,
                "accuracy_per_estimator": {}, "seconds": round(float(seconds.get(name, 0.0)), 3)}
               for name, accuracy in data["robust_accuracy"].items()]
    kept = {k: v for k, v in data.items() if k not in ("robust_accuracy", "worst_case_accuracy", "seconds")}
    return {**kept, "attacks": attacks, "ensemble_accuracy": data["worst_case_accuracy"],
            "seconds": round(sum(float(s) for s in seconds.values()), 3) if isinstance(seconds, dict) else seconds,
            "notes": ["results file from before the attack suites (schema version 0): no flags were checked"]}
