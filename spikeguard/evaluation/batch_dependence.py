"""Whether a sample's output depends on the other samples in its batch, probed before any attack.

The probe samples are scored twice in eval mode, each time as the first rows of a batch of twice their
size, under the same seed: once beside other samples (the probe batch reversed), once beside blank inputs.
Their rows, their batch size and every random draw stay the same (a stochastic model drawing noise of the
batch's shape draws the same noise for them), so only their companions differ. A model whose outputs move
then (BatchNorm normalising with the batch's own statistics) gives every sample a number that depends on
the batch size and on which samples the attacks leave standing: it is refused in one line, unless the user
says the dependence is intended (``--batch-dependent``); the evaluation then runs, and results.json carries
the flag ``batch_dependent`` and the probe's result (``probes.batch_dependence``). A model whose outputs on
the same batch change from one call to the next is left to the state probe (stochastic.check_state_carry).
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.runtime import eval_mode, forked_rng

CHANGE_TOLERANCE = 1e-4  # a sample's logits moved by more than this fraction of the batch's largest logit
DEPENDENT_FRACTION = 0.1  # more than this fraction of probe samples moved: the outputs depend on the batch
FIX = ("call model.eval() and use BatchNorm with running statistics (track_running_stats=True), or pass "
       "--batch-dependent if the dependence is intended")


@torch.no_grad()
def _rows(model: nn.Module, x: torch.Tensor, companions: torch.Tensor, seed: int) -> torch.Tensor:
    """The logits of ``x`` scored as the first rows of one batch with ``companions`` after them."""
    with forked_rng(x.device, seed=seed):
        return model(torch.cat([x, companions]))[: len(x)].float()


def measure(model: nn.Module, x: torch.Tensor, seed: int) -> dict:
    """The probe's result: how many of the probe samples ``x`` changed their logits (and decisions) when
    their batch companions changed, and whether that makes the model batch-dependent."""
    with eval_mode(model):
        beside_others = _rows(model, x, x.flip(0), seed)
        beside_blanks = _rows(model, x, torch.zeros_like(x), seed)
        again = _rows(model, x, x.flip(0), seed)
    scale = beside_others.abs().amax().clamp(min=1e-12)
    if float((beside_others - again).abs().amax() / scale) > CHANGE_TOLERANCE:  # same batch, other outputs
        return {"samples": len(x), "batch_dependent": False, "inconclusive": "the same batch under the same seed "
                "gave other outputs on a later call (state that carries over: the state probe refuses it)"}
    change = (beside_others - beside_blanks).abs().amax(1) / scale
    changed = int((change > CHANGE_TOLERANCE).sum())
    return {"samples": len(x), "compositions": "the probe samples as the first rows of a batch of twice their "
            "size, beside the probe samples reversed, then beside blank inputs (same seed)",
            "changed_samples": changed, "changed_decisions": int((beside_others.argmax(1) !=
                                                                 beside_blanks.argmax(1)).sum()),
            "largest_relative_change": round(float(change.max()), 6) if len(x) else 0.0,
            "tolerance": CHANGE_TOLERANCE, "batch_dependent": changed > DEPENDENT_FRACTION * len(x)}


def _cause(found: dict) -> str:
    return (f"the model's outputs depend on the other samples in its batch ({found['changed_samples']} of "
            f"{found['samples']} probe samples changed when only their batch companions did), as BatchNorm "
            "normalising with the batch's own statistics does")


def check(model: nn.Module, x: torch.Tensor, seed: int, intended: bool) -> dict:
    """The probe's result (``measure``) with ``intended`` recorded; a one-line UserError for a batch-dependent
    model unless the dependence is ``intended``."""
    found = {**measure(model, x, seed), "intended": intended}
    if found["batch_dependent"] and not intended:
        raise UserError(f"{_cause(found)}: every number would depend on the batch size and on which samples the "
                        f"attacks leave standing; {FIX}")
    return found


def check_one_sample(found: dict, failure: str | None) -> None:
    """For a batch-dependent model evaluated as intended: a one-line UserError when it cannot score a batch
    of one sample (``failure``: where and why, from SuiteRunner.one_sample_failure), which the attacks need."""
    if found["batch_dependent"] and failure is not None:
        raise UserError(f"{_cause(found)}, and it cannot score a batch of one sample ({failure}), which the "
                        "attacks need (they score the samples still standing, down to one); call model.eval() "
                        "and use BatchNorm with running statistics")
