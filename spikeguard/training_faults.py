"""The fault policy of training (nan_policy): a step whose input, loss or gradients hold NaN or inf is
skipped, rolled back to the newest checkpoint with a lower learning rate, or fatal (docs/reliability.md).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from spikeguard.checkpoint import latest_resumable
from spikeguard.errors import UserError
from spikeguard.rundir import keep_metrics_up_to
from spikeguard.training_state import RunState, restore

log = logging.getLogger(__name__)

MAX_SKIPS_IN_A_ROW = 10  # nan_policy skip: this many faulty steps in a row is no transient fault


class Rollback(Exception):
    """A numerical fault under nan_policy rollback; caught by the training loop, never seen by a user."""


def numerical_fault(loss: torch.Tensor, x: torch.Tensor, model: torch.nn.Module) -> str | None:
    """None if the input, the loss and every gradient are finite, else what is not. One host sync per step.
    The input is checked because spikes turn NaN into silence (NaN >= threshold is false), so a NaN image
    would otherwise train as a black one."""
    checks = [torch.isfinite(x).all(), torch.isfinite(loss).all()]
    checks += [torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None]
    ok = torch.stack(checks).tolist()
    if all(ok):
        return None
    if not ok[0]:
        return "the input batch holds NaN or inf"
    if not ok[1]:
        return f"the loss is {loss.item()}"
    return "the gradients hold NaN or inf"


def handle_fault(state: RunState, fault: str) -> None:
    """Apply ``nan_policy`` to a faulty step: skip it, roll back (raises Rollback) or abort (UserError)."""
    cfg = state.cfg
    where = f"epoch {state.epoch + 1} step {state.step + 1}"
    hint = ("lower --lr or --lamb, raise --h, or check the data; the last checkpoint is kept: "
            f"spikeguard train --resume {state.run_dir} --nan-policy rollback (or skip) continues")
    if cfg.nan_policy == "skip":
        state.optimizer.zero_grad(set_to_none=True)
        state.skipped += 1
        state.skips_in_a_row += 1
        log.warning("%s: %s; step skipped (nan_policy skip)", where, fault)
        if state.skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
            raise UserError(f"training diverged at {where}: {MAX_SKIPS_IN_A_ROW} steps in a row were skipped "
                            f"({fault}); {hint}")
        return
    if cfg.nan_policy == "rollback" and not fault.startswith("the input"):
        raise Rollback(f"{fault} at {where}")
    why = "; a rollback would replay the same batch" if cfg.nan_policy == "rollback" else ""
    raise UserError(f"training diverged at {where}: {fault}{why}; {hint}")


def roll_back(state: RunState, fault: str, start: dict[str, Any] | None) -> None:
    """Restore the newest checkpoint (or the start of the run) and multiply the learning rate by
    ``rollback_lr_factor``; after ``max_rollbacks`` rollbacks, abort."""
    cfg = state.cfg
    done = state.rollbacks + 1
    if done > cfg.max_rollbacks:
        raise UserError(f"training diverged again after {cfg.max_rollbacks} rollbacks: {fault}; lower --lr or "
                        "--lamb, raise --h, or check the data")
    try:
        path, ckpt = latest_resumable(state.run_dir)
        source = path.name
    except UserError:  # no checkpoint written yet
        assert start is not None, "fit() snapshots the start of a run under nan_policy rollback"
        ckpt, source = start, "the start of the run"
    restore(state, ckpt)
    scale = cfg.rollback_lr_factor ** (done - state.rollbacks)  # the checkpoint may predate earlier rollbacks
    for group in state.optimizer.param_groups:
        group["lr"] *= scale
        group["initial_lr"] *= scale
    state.scheduler.base_lrs = [lr * scale for lr in state.scheduler.base_lrs]
    state.rollbacks = done
    keep_metrics_up_to(state.run_dir, state.epoch)
    log.warning("rollback %d/%d: %s; restarted from %s (epoch %d, step %d) with the learning rate now %.3g",
                done, cfg.max_rollbacks, fault, source, state.epoch, state.step, state.optimizer.param_groups[0]["lr"])
