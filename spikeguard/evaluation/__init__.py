"""Robustness evaluation: attack suites run as per-sample worst cases over (attack, estimator) pairs,
with EoT for stochastic models, random and black-box baselines, and sanity flags.

``EvalConfig`` and ``run_evaluation`` are the entry point. The public names load on first use, so that
``EvalConfig`` (and the command line's checks) need no PyTorch.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "EvalConfig": "spikeguard.evaluation.config",
    "check_eps": "spikeguard.evaluation.config",
    "EvalRecord": "spikeguard.evaluation.evaluate",
    "evaluate_model": "spikeguard.evaluation.evaluate",
    "run_evaluation": "spikeguard.evaluation.evaluate",
    "write_results": "spikeguard.evaluation.evaluate",
    "Suite": "spikeguard.evaluation.suites",
    "load_suite": "spikeguard.evaluation.suites",
    "Target": "spikeguard.evaluation.targets",
    "strongest_examples": "spikeguard.evaluation.strongest",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'spikeguard.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
