"""Choosing a setting on the validation split (docs/findings.md): the rules the findings' selections apply to
candidates' validation clean and robust accuracies. Pure functions, without PyTorch; the candidates are trained
and attacked by experiments/select_findings_settings.py, which never loads the test split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    settings: dict[str, Any]
    val_clean: float
    val_robust: float


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    reached: bool   # whether any candidate met the clean-accuracy condition
    why: str


def best_within_drop(candidates: list[Candidate], reference_clean: float, max_drop: float) -> Choice:
    """The demo's rule: the best validation robust accuracy among candidates losing at most ``max_drop``
    validation clean accuracy against the reference (vanilla); none within it: the one losing least."""
    ok = [c for c in candidates if c.val_clean >= reference_clean - max_drop]
    if ok:
        best = max(ok, key=lambda c: (c.val_robust, c.val_clean))
        return Choice(best, True, f"best validation robust accuracy among {len(ok)} of {len(candidates)} candidates "
                                  f"losing at most {100 * max_drop:g} clean points against the reference")
    closest = max(candidates, key=lambda c: c.val_clean)
    return Choice(closest, False, f"no candidate lost at most {100 * max_drop:g} clean points; the one losing least")


def best_near_clean(candidates: list[Candidate], reference_clean: float, tolerance: float) -> Choice:
    """Equal clean accuracy: the best validation robust accuracy among candidates whose validation clean
    accuracy is within ``tolerance`` of the reference's (SR alone); none within it: the closest, not reached."""
    ok = [c for c in candidates if abs(c.val_clean - reference_clean) <= tolerance + 1e-12]
    if ok:
        best = max(ok, key=lambda c: (c.val_robust, -abs(c.val_clean - reference_clean)))
        return Choice(best, True, f"best validation robust accuracy among {len(ok)} of {len(candidates)} candidates "
                                  f"within {100 * tolerance:g} clean points of the reference")
    closest = min(candidates, key=lambda c: abs(c.val_clean - reference_clean))
    return Choice(closest, False, f"not reached: no candidate within {100 * tolerance:g} clean points of the "
                                  f"reference; the closest ({100 * (closest.val_clean - reference_clean):+.1f} points)")
