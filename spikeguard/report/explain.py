"""The mechanism in words, written from measured numbers only (the demo's diagnosis, the study summary).

Every direction word (falls, rises, does not change) is computed from the two numbers it describes, and
every conclusion is chosen by those directions, so the text says what the measurement shows whichever way
it went, including against the method's paper (docs/method.md, section 7).
"""

from __future__ import annotations

from dataclasses import dataclass

# Changes smaller than this (relative to the baseline) read "does not change": about the 95% half-width of the
# seed-to-seed spread of vanilla's median ||dm/dx||_1 on digits (33.3 +- 3.75, studies/results/digits-lambda).
NO_CHANGE = 0.10


def direction(before: float, after: float, tolerance: float = NO_CHANGE) -> str:
    """'rises', 'falls' or 'does not change' from ``before`` to ``after`` (relative tolerance)."""
    scale = max(abs(before), 1e-300)
    change = (after - before) / scale
    if change > tolerance:
        return "rises"
    if change < -tolerance:
        return "falls"
    return "does not change"


def factor(before: float, after: float) -> str:
    """'2.1x' for a change by more than the tolerance, else ''; the larger over the smaller."""
    if before <= 0 or after <= 0 or direction(before, after) == "does not change":
        return ""
    return f" {max(before, after) / min(before, after):.1f}x"


@dataclass(frozen=True)
class Mechanism:
    """One model's (or group's) medians at clean test points under its training estimator."""
    grad_f_l1: float          # ||df/dx||_1, what SR's penalty estimates
    grad_m_l1: float          # ||dm/dx||_1, the margin's
    confidence: float         # f (1 - f), the factor between them
    l1_over_l2: float         # scale-free concentration (the same for f and m)
    flip_distance: float      # m / ||dm/dx||_1

    @classmethod
    def from_medians(cls, medians: dict[str, float | None]) -> Mechanism | None:
        """From clean-point medians (spikeguard/analysis/mechanism.py's keys); None when one was not measured
        (no finite value: e.g. every input gradient zero)."""
        values = [medians.get(k) for k in ("f_l1", "m_l1", "f_one_minus_f", "m_l1_over_l2", "flip_distance")]
        if any(v is None for v in values):
            return None
        return cls(*(float(v) for v in values if v is not None))


def _change(name: str, before: float, after: float, fmt: str = ".3g") -> str:
    return f"{name} {direction(before, after)}{factor(before, after)} ({before:{fmt}} to {after:{fmt}})"


def mechanism_sentences(base: Mechanism, other: Mechanism, base_name: str, other_name: str) -> list[str]:
    """What changes from ``base_name`` to ``other_name`` and what that says about the paper's mechanism."""
    f_dir, m_dir = direction(base.grad_f_l1, other.grad_f_l1), direction(base.grad_m_l1, other.grad_m_l1)
    c_dir = direction(base.confidence, other.confidence)
    lines = [
        f"From {base_name} to {other_name}, at clean test points (medians, training estimator): "
        f"{_change('||df/dx||_1, the quantity the SR penalty estimates,', base.grad_f_l1, other.grad_f_l1)}; "
        f"it is f (1 - f) times ||dm/dx||_1 exactly (m the logit margin), and "
        f"{_change('||dm/dx||_1', base.grad_m_l1, other.grad_m_l1)} while "
        f"{_change('the confidence factor f (1 - f)', base.confidence, other.confidence)}."
    ]
    if m_dir == "falls" and f_dir != "falls":
        lines.append("The margin's gradient shrinks as the paper's mechanism needs, but lower confidence hides it in "
                     "||df/dx||_1: measured at clean points, the penalised quantity says nothing about the "
                     "mechanism on these models; the margin's gradient does.")
    elif m_dir == "falls" and f_dir == "falls":
        lines.append("Both the margin's gradient and the penalised quantity shrink, as the paper's mechanism says"
                     + (" (confidence moves the other way, so part of the margin's change is hidden)."
                        if c_dir == "rises" else "."))
    elif f_dir == "falls":
        lines.append("The penalised quantity shrinks only because the model grew more confident (f (1 - f) falls); "
                     "the margin's gradient does not shrink, so the paper's mechanism is not what changed.")
    else:
        lines.append("Neither the margin's gradient nor the penalised quantity shrinks: the paper's mechanism is not "
                     "at work on this pair.")
    lines.append(
        f"The gradient's concentration l1/l2 {direction(base.l1_over_l2, other.l1_over_l2)} "
        f"({base.l1_over_l2:.2f} to {other.l1_over_l2:.2f}; sqrt(pixels) bounds it), and the first-order flip "
        f"distance m / ||dm/dx||_1 {direction(base.flip_distance, other.flip_distance)}"
        f"{factor(base.flip_distance, other.flip_distance)} ({base.flip_distance:.3g} to "
        f"{other.flip_distance:.3g} in pixel units).")
    return lines
