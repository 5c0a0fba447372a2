"""The training loop: SGD + cosine schedule, per-epoch validation, metrics.jsonl, rotating training
checkpoints (last.pt, last.1.pt, ...) and best.pt, resume after a crash, and a policy for NaN or inf.

Checkpoints are selected on the validation split (held out of the training set), never on test.
A training checkpoint holds every source of randomness and the data order, so on CPU a run killed at any
point and resumed ends with the same weights, bit for bit, as one never interrupted (docs/reliability.md).

The file reads top to bottom: the entry points, building a run, the loop, the end of an epoch. What a
checkpoint holds and how a run is restored from one lives in spikeguard.training_state; what a step with
NaN or inf does (nan_policy) in spikeguard.training_faults; the files of a run directory in spikeguard.rundir.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from spikeguard.adapters import stateless
from spikeguard.checkpoint import (
    latest_resumable,
    read_checkpoint,
    save_checkpoint,
    save_rotating,
)
from spikeguard.config import RESUME_FIELDS, TrainConfig, config_from_dict, dvs_options, load_config_file
from spikeguard.data import DataSplits, load_dataset, stack
from spikeguard.defenses import DEFENSES, create_defense
from spikeguard.defenses.sparsity import penalty_probe, probability_and_margin_gradients
from spikeguard.distributed import (
    all_ranks_true,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    context,
    decorrelate_ranks,
    init_distributed,
    is_main,
    on_main,
    per_rank_batch_size,
    rank_batches,
    sharded_accuracy,
    wrap_objective,
)
from spikeguard.errors import UserError
from spikeguard.external import external_model
from spikeguard.locks import claim
from spikeguard.models import ModelSpec, SpikingNet, create_model
from spikeguard.progress import Reporter, times
from spikeguard.rundir import (
    BEST,
    CONFIG,
    append_metrics,
    existing_run_dir,
    keep_metrics_up_to,
    prepare_run_dir,
    remove_stale_temporaries,
    start_run_dir,
    write_config,
)
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.speed import (
    autocast,
    configure_backends,
    prepare_model,
    to_memory_format,
)
from spikeguard.training_faults import Rollback, handle_fault, numerical_fault, roll_back
from spikeguard.training_state import RunState, capture, describe, drop_last, restore, snapshot

log = logging.getLogger(__name__)

PENALISED = DEFENSES.names(penalised=True)  # defenses whose penalty must not be identically zero


@dataclass
class TrainResult:
    run_dir: Path
    model: SpikingNet          # the best-on-validation weights
    best_val_accuracy: float
    best_epoch: int
    seconds: float


# ---- entry points: a new run, or a resumed one

def train(cfg: TrainConfig, out: str | Path, progress: bool = True, data: DataSplits | None = None,
          take_over_lock: bool = False, model: torch.nn.Module | None = None) -> TrainResult:
    """Train one model as ``cfg`` says into the new run directory ``out`` (``model``: a module built outside
    spikeguard, trained in place; else ``cfg.model_fn``'s or the registry's). Python's, NumPy's and torch's
    global random states are seeded with ``cfg.seed`` inside a fork, so the caller's are unchanged.
    ``out`` is claimed for this run (spikeguard.locks); ``take_over_lock``: also from a run on another host."""
    cfg = settled(cfg, model)
    _, device = init_distributed(cfg.device)  # under torchrun: join the group; rank 0 alone writes files
    run_dir = Path(out)
    on_main(prepare_run_dir, out)
    with claim(run_dir, directory=True, other_host=take_over_lock, check=lambda: prepare_run_dir(out)):
        if data is None:
            data = load_data(cfg)
        with seeded_rngs(cfg.seed, device):
            state = build_run(cfg, run_dir, device, data, model)
            decorrelate_ranks(state.defense, cfg.seed)
            on_main(start_run_dir, run_dir, cfg)
            return fit(state, progress)


def resume(run_dir: str | Path, epochs: int | None = None, progress: bool = True, data: DataSplits | None = None,
           take_over_lock: bool = False, model: torch.nn.Module | None = None, **changes: Any) -> TrainResult:
    """``_resume`` holding the run directory's lock (spikeguard.locks), taken over from a killed run on this
    host, or with ``take_over_lock`` from one on another host; taken before any file there is touched."""
    run_dir = existing_run_dir(run_dir)
    with claim(run_dir, directory=True, take_over=True, other_host=take_over_lock):
        return _resume(run_dir, epochs, progress, data, model, **changes)


def _resume(run_dir: str | Path, epochs: int | None = None, progress: bool = True, data: DataSplits | None = None,
            model: torch.nn.Module | None = None, **changes: Any) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest valid training checkpoint, up to ``epochs`` epochs
    (default: its config's). ``changes`` may set the RESUME_FIELDS, e.g. device="cpu" or nan_policy="skip".

    A different ``epochs`` stretches the cosine schedule: from the resumed epoch on, the learning rate is the
    one an ``epochs``-epoch schedule has there (so only the same ``epochs`` repeats an uninterrupted run)."""
    run_dir = existing_run_dir(run_dir)
    cfg = settled(config_from_dict(load_config_file(run_dir / CONFIG)), model)
    path, ckpt = latest_resumable(run_dir)
    # Under torchrun every rank gets here before any can pass init_distributed below, so none is writing yet.
    remove_stale_temporaries(run_dir)  # half-written files of the killed process
    saved = ckpt.get("config", {})
    defaults = TrainConfig().to_dict()  # a field added since the checkpoint was written had its default then
    differ = sorted(k for k, v in cfg.to_dict().items()  # a field that does not apply is not recorded: any is fine
                    if k not in RESUME_FIELDS and cfg.applies(k) and saved.get(k, defaults[k]) != v)
    if differ:
        raise UserError(f"config.yaml in '{run_dir}' differs from its checkpoint in {', '.join(differ)}; "
                        "a resumed run keeps the settings it was started with")
    bad = sorted(set(changes) - set(RESUME_FIELDS))
    if bad:
        raise UserError(f"a resumed run cannot change {', '.join(bad)}; only {', '.join(RESUME_FIELDS)}")
    changes = {k: v for k, v in changes.items() if v is not None}
    if epochs is not None:
        if epochs < ckpt["epoch"]:
            raise UserError(f"--epochs {epochs} is fewer than the {ckpt['epoch']} epochs '{run_dir}' has finished")
        changes["epochs"] = epochs
    cfg = settled(config_from_dict(changes, base=cfg), model)
    _, device = init_distributed(cfg.device)
    if data is None:
        data = load_data(cfg)
    with seeded_rngs(cfg.seed, device):
        state = build_run(cfg, run_dir, device, data, model)
        if [t["sha256"] for t in state.facts.get("teachers", [])] != [t["sha256"] for t in ckpt.get("teachers", [])]:
            raise UserError(f"the teacher of '{run_dir}' has changed since its checkpoint (its files' sha256 "
                            "differ): a resumed student learns from the teacher it started with")
        restore(state, ckpt)
        if cfg.epochs != saved.get("epochs"):
            stretch_schedule(state)
        # ranks > 0 continue on fresh rank-local streams: a checkpoint holds rank 0's only
        decorrelate_ranks(state.defense, cfg.seed + 1 + state.epoch * 100_003 + state.step)
        on_main(write_config, run_dir, cfg)
        on_main(keep_metrics_up_to, run_dir, state.epoch)
        log.info("resuming %s from %s: epoch %d, step %d", run_dir, path.name, state.epoch, state.step)
        return fit(state, progress)


def settled(cfg: TrainConfig, model: torch.nn.Module | None) -> TrainConfig:
    """``cfg.resolved()``; for a module given as an object no registry architecture is named."""
    return dataclasses.replace(cfg.resolved(), model=None) if model is not None else cfg.resolved()


def load_data(cfg: TrainConfig) -> DataSplits:
    """The data set; under torchrun rank 0 loads (and downloads) it first, then the other ranks."""
    args = (cfg.dataset, cfg.data_dir, cfg.download, cfg.val_fraction, cfg.seed, cfg.augment)
    dvs = dvs_options(cfg.to_dict())
    data = on_main(load_dataset, *args, dvs=dvs)
    return data if data is not None else load_dataset(*args, dvs=dvs)


# ---- building a run: seeded global generators, the model, optimiser, schedule and defense

@contextmanager
def seeded_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Python's, NumPy's and torch's global generators (and the training GPU's) seeded with ``seed`` for the
    block, and given back as they were afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with forked_rng(device, seed=seed):
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def model_spec(cfg: TrainConfig, data: DataSplits) -> ModelSpec:
    """The checkpoint's architecture record: the training estimator travels with the model (evaluation's and
    analysis's default), and network 'ann' builds ReLU units (cfg.time_steps is 1 then on images)."""
    return ModelSpec(cfg.model, data.num_classes, data.in_channels, data.image_size, data.mean, data.std,
                     cfg.time_steps, cfg.tau, cfg.encoder, estimator=cfg.train_estimator,
                     spiking=cfg.network == "snn")


def build_run(cfg: TrainConfig, run_dir: Path, device: torch.device, data: DataSplits,
              model: torch.nn.Module | None = None) -> RunState:
    """A fresh run: the model initialised from the global generator (or ``model``, or the one
    ``cfg.model_fn`` builds, with its library neurons reset before every pass), optimiser, schedule, defense."""
    spec = model_spec(cfg, data) if model is None and cfg.model_fn is None else None
    model, facts = (create_model(spec), {}) if spec is not None else external_model(cfg.model_fn, model)
    model = model.to(device)
    teacher = None
    if cfg.applies("teacher"):  # sr_distill: its checkpoints' hashes travel with the run (a resume compares them)
        from spikeguard.defenses.distillation import load_teacher

        teacher, facts["teachers"] = load_teacher(cfg.teacher or [], cfg.dataset, device)
    defense = create_defense(cfg.defense, lamb=cfg.lamb, h=cfg.h, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                             attack=cfg.attack, beta=cfg.rat_beta, gr_lamb=cfg.gr_lamb or 0.0, seed=cfg.seed,
                             teacher=teacher, kd_temperature=cfg.kd_temperature, kd_alpha=cfg.kd_alpha)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    per_rank_batch_size(cfg.batch_size)  # under torchrun: the global batch must split evenly over the ranks
    options = cfg.speed_options()
    options.check(device, cfg.defense)
    configure_backends(options)
    # the speed options and SyncBatchNorm keep the model's parameter objects, so the optimiser holds them still
    objective = wrap_objective(prepare_model(model, options), defense, device, sync_bn=cfg.sync_bn)
    return RunState(cfg, run_dir, device, data, spec, model, optimizer, scheduler, defense,
                    shuffle=torch.Generator().manual_seed(cfg.seed), objective=objective, options=options, facts=facts)


def stretch_schedule(state: RunState) -> None:
    """Put the learning rate where a cosine schedule over ``cfg.epochs`` epochs has it now."""
    sched = state.scheduler
    sched.T_max = state.cfg.epochs
    for group, base in zip(state.optimizer.param_groups, sched.base_lrs):
        group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * state.epoch / sched.T_max)) / 2


# ---- the loop: epochs of steps in a stored data order; a rollback restarts from the newest checkpoint

def fit(state: RunState, progress: bool) -> TrainResult:
    """Train until ``cfg.epochs`` epochs are done; the returned model holds the best-on-validation weights."""
    cfg, device = state.cfg, state.device
    stats_x, stats_y = (t.to(device) for t in stack(state.data.val, cfg.grad_stats_batch))
    # The target of a rollback before the first checkpoint exists: the run as it started, on the CPU.
    start = snapshot(state) if cfg.nan_policy == "rollback" else None
    news = Reporter(enabled=bool(progress) and is_main())
    news.line(f"training {cfg.model_fn or cfg.model or type(state.model).__name__} with {cfg.defense} on {cfg.dataset}: epochs {state.epoch + 1} to {cfg.epochs} of "
              f"{state.steps_per_epoch()} steps, into {state.run_dir}")
    first = (state.elapsed(), state.epoch)  # this process's pace estimates the time remaining
    while state.epoch < cfg.epochs:
        began = state.elapsed()
        try:  # the steps of this epoch not done yet
            run_epoch(state, news)
        except Rollback as fault:  # back to the newest checkpoint, with a lower learning rate
            roll_back(state, str(fault), start)
            continue
        record = end_epoch(state, stats_x, stats_y)  # validate, log, best.pt, last.pt
        done_here = state.epoch - first[1]
        remaining = (record["seconds"] - first[0]) / done_here * (cfg.epochs - state.epoch) if done_here > 0 else None
        news.line(epoch_line(cfg, record, record["seconds"] - began, remaining))
    barrier()
    if is_main():  # the other ranks return their last weights (best.pt may live on rank 0's node only)
        state.model.load_state_dict(read_checkpoint(state.run_dir / BEST)["model"])
    state.model.eval()
    return TrainResult(state.run_dir, state.model, state.best_acc, state.best_epoch, state.elapsed())


def epoch_line(cfg: TrainConfig, record: dict[str, Any], seconds: float, remaining: float | None) -> str:
    """One epoch in words: what metrics.jsonl records, for the terminal or a log file; the run's time so far
    and the estimate of the time it still needs."""
    penalty = f", penalty {record['penalty']:.4g}" if DEFENSES.get(cfg.defense).needs_lamb else ""
    if "val_sr_penalty" in record:  # every defense's, on the fixed validation batch (nothing trains on it)
        penalty += f", SR penalty on validation {record['val_sr_penalty']:.4g}"
    return (f"{cfg.defense} epoch {record['epoch']}/{cfg.epochs}: loss {record.get('loss', float('nan')):.4f}"
            f"{penalty}, validation accuracy {record['val_accuracy']:.4f}, {seconds:.1f}s; "
            f"{times(record['seconds'], remaining)}")


def epoch_order(generator: torch.Generator, n: int) -> torch.Tensor:
    """The order of one epoch's samples, with the same draws DataLoader(shuffle=True, generator=generator)
    makes in an epoch: an int64 for worker seeds, the permutation, and a second permutation its sampler
    draws (and cuts to length 0) when it runs out. So runs keep the orders of spikeguard 0.1.0."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)
    return order


def epoch_loader(state: RunState) -> DataLoader:
    """The batches of the current epoch from step ``state.step`` on, in the epoch's stored order. Its own
    generator keeps DataLoader from drawing its worker seed from the global generator mid-epoch."""
    b = state.cfg.batch_size
    assert state.order is not None, "run_epoch draws the order first"
    rest = state.order[state.step * b:].tolist()
    if context().distributed:  # each rank takes its share of every global batch; steps count global batches
        return DataLoader(state.data.train, batch_sampler=rank_batches(rest, b, drop_last(len(state.data.train), b)))
    return DataLoader(state.data.train, batch_size=b, sampler=rest, drop_last=drop_last(len(state.data.train), b),
                      generator=torch.Generator().manual_seed(state.cfg.seed + state.epoch))


def run_epoch(state: RunState, news: Reporter) -> None:
    """Train the batches of epoch ``state.epoch + 1`` that are not done yet, checkpointing every
    ``checkpoint_every`` steps."""
    cfg = state.cfg
    if state.order is None:  # a new epoch
        state.order = epoch_order(state.shuffle, len(state.data.train))
        state.step = state.taken = state.skipped = 0
        state.sums = {}
    steps = state.steps_per_epoch()
    state.model.train()
    # a bar of the epoch's steps on a terminal only: a log gets the epoch's line (fit) and stays readable
    with news.counting(f"steps of {cfg.defense} epoch {state.epoch + 1}/{cfg.epochs}", steps, done=state.step) as step:
        for x, y in epoch_loader(state):
            train_step(state, x, y)
            state.step += 1
            step()
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < steps:
                checkpoint(state)


def train_step(state: RunState, x: torch.Tensor, y: torch.Tensor) -> None:
    x, y = x.to(state.device), y.to(state.device)
    assert state.objective is not None, "build_run sets it"
    with autocast(state.device, state.options.bf16):
        loss, parts = state.objective(to_memory_format(x, state.options), y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    fault = numerical_fault(loss, x, state.model)
    if context().distributed and not all_ranks_true(fault is None, state.device):  # every rank acts alike
        fault = fault or "the input, loss or gradients of another process hold NaN or inf"
    if fault is not None:
        handle_fault(state, fault)
        return
    state.skips_in_a_row = 0
    state.optimizer.step()
    state.defense.after_step(state.model)
    state.taken += 1
    for key, value in {"loss": loss.detach(), **parts}.items():
        state.sums[key] = state.sums.get(key, 0.0) + value  # summed on the device: no host sync per step


# ---- the end of an epoch: validate, log, best.pt, checkpoint; a collapsed run stops

def end_epoch(state: RunState, stats_x: torch.Tensor, stats_y: torch.Tensor) -> dict[str, Any]:
    """Validate, log the epoch, update best.pt, checkpoint; abort a collapsed run once that is on disk."""
    epoch = state.epoch + 1
    if state.taken == 0:
        raise UserError(f"every step of epoch {epoch} was skipped; lower --lr or --lamb, raise --h, or check the data")
    lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    if context().distributed:  # rank 0's BatchNorm statistics (what it saves), the metrics averaged over ranks
        broadcast_buffers(state.model)
        state.sums = {k: all_reduce_sum(state.sums[k].clone()) / context().world_size for k in sorted(state.sums)}
        val_acc = sharded_accuracy(state.model, state.data.val, 256, state.device)
    else:
        val_acc = accuracy(state.model, state.data.val, 256, state.device)
    record = {"epoch": epoch, "lr": lr, **{k: float(v) / state.taken for k, v in state.sums.items()},
              "val_accuracy": val_acc, **input_gradient_stats(state.model, stats_x, stats_y, state.cfg.h),
              "skipped_steps": state.skipped, "rollbacks": state.rollbacks, "seconds": state.elapsed()}
    collapsed = collapse(state, record)
    state.epoch, state.step, state.order, state.val_accuracy = epoch, 0, None, val_acc
    on_main(append_metrics, state.run_dir, record)
    if val_acc > state.best_acc:  # best.pt before last.pt: a crash between them replays this epoch
        state.best_acc, state.best_epoch = val_acc, epoch
        on_main(save_checkpoint, state.run_dir / BEST, {**describe(state), "model": state.model.state_dict()})
    checkpoint(state)
    if collapsed:
        raise UserError(collapsed)
    return record


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset, batch_size: int, device: torch.device) -> float:
    correct = total = 0
    with eval_mode(model):
        for x, y in DataLoader(dataset, batch_size=batch_size):
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
    return correct / max(total, 1)


def input_gradient_stats(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, h: float) -> dict[str, float]:
    """On the fixed validation batch, in eval mode, under the training estimator: mean l1 and l2 norms and the
    fraction of exact zeros of df/dx (f: docs/method.md's true-class probability) and of dm/dx (m = z_y - z_k,
    with df/dx = f (1 - f) dm/dx), and the SR penalty's value for every defense, vanilla included, beside the
    same finite difference on the margin (``penalty_probe``: no gradient, nothing trains on it)."""
    with eval_mode(model):
        with stateless(model) as fresh:
            grads = probability_and_margin_gradients(fresh, x, y)
        probe = penalty_probe(model, x, y, h)
    g, gm = grads["grad_f"].flatten(1), grads["grad_m"].flatten(1)
    return {"grad_l1": g.abs().sum(1).mean().item(), "grad_l2": g.norm(dim=1).mean().item(),
            "grad_zero_fraction": (g == 0).float().mean().item(),
            "grad_margin_l1": gm.abs().sum(1).mean().item(), "grad_margin_l2": gm.norm(dim=1).mean().item(),
            "val_sr_penalty": probe["sr_penalty"], "val_margin_penalty": probe["margin_penalty"]}


def collapse(state: RunState, record: dict[str, float]) -> str | None:
    """Why the epoch just ended shows a run training garbage, or None. Chance level is 1 / classes plus three
    binomial standard deviations of the validation set."""
    cfg, epoch, val = state.cfg, record["epoch"], record["val_accuracy"]
    classes = state.data.num_classes
    chance = 1 / classes + 3 * math.sqrt((1 / classes) * (1 - 1 / classes) / max(len(state.data.val), 1))
    if cfg.defense in PENALISED and record.get("penalty") == 0:
        return (f"the {cfg.defense} penalty was exactly 0 at every step of epoch {epoch}, so the run trains as "
                f"vanilla (h {cfg.h:g} too small to flip a spike?); run {state.run_dir} kept")
    if val <= chance and state.best_acc > chance:
        return (f"training collapsed at epoch {epoch}: validation accuracy {val:.3f} fell to chance from "
                f"{state.best_acc:.3f} (epoch {state.best_epoch}, kept in best.pt); lower --lr or --lamb")
    if val <= chance and record.get("ce", 0.0) > 2 * math.log(classes):
        return (f"training collapsed at epoch {epoch}: validation accuracy {val:.3f} is at chance and the training "
                f"cross-entropy {record['ce']:.3g} is far above log({classes}) = {math.log(classes):.2f}, "
                "a confidently wrong model; lower --lr or --lamb, or raise --h")
    if val <= chance:  # may still be a slow start: said, not fatal
        log.warning("epoch %d: validation accuracy %.3f is at chance (1/%d); the run is not learning yet",
                    epoch, val, classes)
    return None


def checkpoint(state: RunState) -> None:
    try:
        on_main(lambda: save_rotating(state.run_dir, capture(state), state.cfg.keep_checkpoints))
    except UserError as e:
        raise UserError(f"{e}; after freeing space: spikeguard train --resume {state.run_dir}") from None
