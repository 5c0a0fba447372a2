"""Robustness evaluation: attack suites run as per-sample worst cases over (attack, estimator) pairs,
with EoT for stochastic models, random and black-box baselines, and sanity flags.

``EvalConfig`` and ``run_evaluation`` are the entry point. The public names load on first use, so that
``EvalConfig`` (and the command line's checks) need no PyTorch.
"""

from __future__ import annotations

from spikeguard.registry import lazy_exports

_PUBLIC = {
    "EvalConfig": "spikeguard.evaluation.config",
    "check_eps": "spikeguard.evaluation.config",
    "EvalRecord": "spikeguard.schema",
    "Evaluation": "spikeguard.evaluation.evaluate",
    "evaluate_model": "spikeguard.evaluation.evaluate",
    "run_evaluation": "spikeguard.evaluation.evaluate",
    "write_results": "spikeguard.evaluation.evaluate",
    "Suite": "spikeguard.evaluation.suites",
    "load_suite": "spikeguard.evaluation.suites",
    "Target": "spikeguard.evaluation.targets",
    "strongest_examples": "spikeguard.evaluation.strongest",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)
