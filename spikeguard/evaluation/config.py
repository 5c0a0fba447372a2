"""What an evaluation is asked to do, validated once: the one object the command line and the Python API
build before calling :func:`spikeguard.evaluation.run_evaluation`.

Loads without PyTorch, so the command line checks every evaluation flag before the heavy import. The
policy that depends on the model (eps from training, threat model from the data) is applied by
:meth:`EvalConfig.for_target`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.runtime import check_device

THREAT_MODELS = ("linf", "frames-linf", "events-l0")
SUITE_DIR = Path(__file__).resolve().parent.parent / "suites"  # the shipped suites (configs/suites links here)


@dataclass(frozen=True)
class EvalConfig:
    suite: Any = "quick"               # a shipped suite's name, a suite YAML path, or a Suite
    eps: float | str | None = None     # radius in pixel scale ("8/255" accepted); None: the training eps
    n: int | None = None               # the first n test samples; None: all
    batch_size: int = 256
    seed: int = 0
    eot_draws: int | None = None       # draws for a stochastic model; None: the suite's
    eps_sweep: bool = False            # also sweep eps (events-l0: the budget) and flag what does not fall
    threat_model: str | None = None    # None: linf for images, frames-linf for event data
    budget: int | None = None          # events-l0: events added or removed per sample
    source: Any = None                 # transfer source: a checkpoint, "package.module:function" or a module
    device: str = "cpu"
    progress: bool = True
    batch_dependent: bool = False      # outputs that depend on the batch are intended (else refused)

    def validated(self) -> EvalConfig:
        """A copy with eps parsed and every field checked; one-line UserError naming the bad one."""
        eps = self.eps
        if isinstance(eps, str):
            from spikeguard.config import coerce_field

            eps = coerce_field("eps", eps, "float")
        if eps is not None:
            eps = check_eps(eps)
            if self.threat_model != "events-l0":  # linf and frames-linf radii lie in [0, 1]; events-l0 has none
                from spikeguard.config import check_linf_eps

                check_linf_eps(eps)
        for name, low in (("n", 1), ("batch_size", 1), ("eot_draws", 1), ("budget", 0), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                what = {"n": "n", "batch_size": "batch size", "eot_draws": "EoT draws", "budget": "--budget",
                        "seed": "seed"}[name]
                raise UserError(f"{what} must be an integer of at least {low}, got {value!r}")
        if isinstance(self.suite, (str, Path)):
            suite_path(self.suite)
        if self.threat_model is not None and self.threat_model not in THREAT_MODELS:
            raise UserError(f"unknown threat model '{self.threat_model}'; choose from {', '.join(THREAT_MODELS)}")
        if self.budget is not None and self.threat_model not in (None, "events-l0"):
            raise UserError(f"--budget counts events: it applies to the events-l0 threat model only, not "
                            f"{self.threat_model}")
        if not isinstance(self.batch_dependent, bool):
            raise UserError(f"batch_dependent must be True or False, got {self.batch_dependent!r}")
        check_device(str(self.device))
        return dataclasses.replace(self, eps=eps)

    def for_target(self, target) -> EvalConfig:
        """The policy that depends on the model: the threat model defaults to frames-linf on event data and
        linf on images; eps defaults to the training eps; events-l0 needs a budget and no eps."""
        config = self.validated()
        threat = config.threat_model or ("frames-linf" if target.frame_range is not None else "linf")
        if threat != "events-l0" and config.budget is not None:
            raise UserError(f"--budget counts events: it applies to the events-l0 threat model only, not {threat}")
        eps = config.eps if config.eps is not None else target.eps
        if eps is None:
            if threat != "events-l0":
                raise UserError("no eps given and the model records none; pass --eps")
            eps = 0.0  # events-l0 spends a budget of events; eps is unused
        return dataclasses.replace(config, threat_model=threat, eps=eps)


def check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise UserError(f"eps must be a non-negative number, got {eps}")
    return float(eps)


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def suite_path(name_or_path: str | Path) -> Path:
    """A suite YAML file, or the shipped suite of that name; UserError naming the choices otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    path = SUITE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(f"unknown suite '{name_or_path}'; choose from {', '.join(available_suites())} or give a "
                        "YAML file")
    return path
