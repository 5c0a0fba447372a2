"""Data-parallel training and sharded evaluation over torch.distributed, as launched by torchrun.

Without torchrun's environment (or with WORLD_SIZE = 1) every helper here is the identity of the
single-process case, so callers need no second code path.

Why the whole training objective runs inside one forward (``ObjectiveModule``): DistributedDataParallel
(DDP) assumes one forward of the wrapped module per backward; at each forward it re-broadcasts rank 0's
buffers and (with find_unused_parameters or static_graph) prepares its reducer from that forward's
outputs. SR and SR* call the model twice per step with an input gradient in between, GR differentiates
twice, and AT / SR* run a whole attack before the loss. Calling a DDP-wrapped model for each of those
passes happens to give the right gradients with DDP's default settings in torch 2.14, but re-broadcasts
the BatchNorm buffers before every pass (up to 9 times a step for PGD-7), and with ``static_graph=True``
it silently averages the wrong gradients (measured: after two SR steps on 2 ranks the parameters were 2e-2
off and differed between the ranks). Wrapping ``defense.loss(model, x, y)`` as the forward of one module
gives DDP one forward and one backward per step, whatever the defense does inside; it was exact with the
default settings and with static_graph=True.

The inner passes do not trigger gradient synchronisation: DDP all-reduces from hooks on each parameter's
gradient accumulator, and ``torch.autograd.grad(f, x)`` w.r.t. the input only never runs those
accumulators (it computes what x needs and stores nothing in ``.grad``). GR's create_graph pass builds a
graph through the parameters; the final ``loss.backward()`` sums every path into each accumulator before
running it once, so each hook still fires exactly once per step. Every parameter takes part in every
objective, so ``find_unused_parameters`` stays False (cheaper; a parameter left out would make DDP raise at
the next step rather than train silently wrong) and the graph need not be declared static.
"""

from __future__ import annotations

import datetime
import gc
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from spikeguard.errors import UserError
from spikeguard.runtime import eval_mode, pick_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise UserError(f"environment variable {name} is missing; launch with torchrun")
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {text!r}") from None


def launched_distributed() -> bool:
    """True when torchrun (or another launcher) set WORLD_SIZE > 1."""
    return _env_int("WORLD_SIZE", 1) > 1


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and pick
    this process's device: cuda:LOCAL_RANK with NCCL, or the CPU with gloo. Without WORLD_SIZE > 1 it
    only resolves ``device`` and returns the single-process context."""
    if not launched_distributed():
        return DistContext(), pick_device(device)
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise UserError(f"RANK {rank} is outside 0..{world - 1}")
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise UserError(f"environment variable {key} is missing; launch with torchrun")
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"under torchrun use --device auto, cuda or cpu (each process takes cuda:LOCAL_RANK), "
                        f"not '{device}'")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but no CUDA device is available")
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) on this node")
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    else:
        target = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistContext(rank, world, local, backend), target


TEARDOWN_MEETING_S = 120  # how long a rank waits for the others at the end before it leaves anyway


def close_distributed() -> None:
    """Leave the process group, every rank the same way.

    Gloo's worker threads can still hold the group's last pieces of work, with their tensors, through the
    objects that used it (a DistributedDataParallel wrapper). Freed only while Python shuts down, those
    tensors need an interpreter that is going away, and the process ends with SIGABRT ("terminate called
    without an active exception"). So: every such object no longer reachable is freed now (a collection),
    the ranks meet (none closes its connections while another is still inside a collective with it), the
    group is destroyed, and what it leaves is freed again, all while the interpreter is whole. After an
    error the ranks do not meet: a peer may be waiting inside another collective.
    """
    if not dist.is_initialized():
        return
    gc.collect()
    if sys.exc_info()[0] is None:  # a normal end; (called from a finally clause, it sees the error leaving)
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=TEARDOWN_MEETING_S))
            else:
                dist.barrier()
        except Exception:  # a peer already gone: leave all the same
            pass
    dist.destroy_process_group()
    gc.collect()


def context() -> DistContext:
    """The context of the process group already joined (single-process when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())


def is_main() -> bool:
    """Rank 0, the one process that logs and writes files."""
    return context().is_main


def barrier() -> None:
    if context().distributed:
        dist.barrier()


# ---------------------------------------------------------------------------------------------------------
# training


class ObjectiveModule(nn.Module):
    """``forward(x, y) -> (loss, parts)`` computes a defense's whole objective on ``model``, so that DDP
    sees one forward per backward (see the module docstring). Without DDP it is ``defense.loss``."""

    def __init__(self, model: nn.Module, defense):
        super().__init__()
        self.model = model
        self.defense = defense

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return self.defense.loss(self.model, x, y)


def wrap_objective(model: nn.Module, defense, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """An ObjectiveModule for ``model`` and ``defense``, inside DDP when a process group is joined.

    ``sync_bn`` turns BatchNorm into SyncBatchNorm in place (batch statistics over all ranks, as one big
    batch would have; CUDA only in PyTorch). ``model`` keeps its parameters, state-dict keys and
    ``after_step`` behaviour, so checkpoints and the defense's weight updates go through it as usual.
    Without sync_bn each rank normalises with its own batch's statistics and DDP copies rank 0's running
    statistics to the others at every step.
    """
    ctx = context()
    if sync_bn and ctx.distributed:
        if device.type != "cuda":
            raise UserError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU)")
        convert_sync_batchnorm(model)
    objective = ObjectiveModule(model, defense)
    if not ctx.distributed:
        return objective
    return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``model`` in place by SyncBatchNorm with the same weights and buffers."""
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        raise TypeError("convert the model that holds the BatchNorm, not the BatchNorm itself")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place


def per_rank_batch_size(global_batch: int, world_size: int | None = None) -> int:
    """The global batch split evenly over the ranks, so a step sees the same number of samples (and the
    same learning-rate semantics) at any world size."""
    world = context().world_size if world_size is None else world_size
    if global_batch % world:
        raise UserError(f"batch size {global_batch} does not split evenly over {world} processes; "
                        f"choose a multiple of {world}")
    return global_batch // world


def distributed_sampler(dataset, seed: int, shuffle: bool = True, drop_last: bool = False) -> DistributedSampler | None:
    """A DistributedSampler over the joined group (call ``set_epoch`` each epoch); None when single-process."""
    ctx = context()
    if not ctx.distributed:
        return None
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


def rank_batches(order: list[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    """This rank's share of each global batch of ``order`` (consecutive ``batch_size`` indices; a short
    last one dropped if ``drop_last``), split like :func:`shard_indices`. All ranks share one data order,
    so an epoch is the same sequence of global batches at any world size, and a step count taken at one
    world size resumes at another. Plays the role of a DistributedSampler (whose set_epoch is the
    caller's per-epoch order)."""
    ctx = context()
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if any(len(b) < ctx.world_size for b in batches):
        raise UserError(f"a batch of fewer than {ctx.world_size} samples cannot be split over "
                        f"{ctx.world_size} processes; use a larger data set or batch size")
    return [[b[i] for i in shard_indices(len(b), ctx.rank, ctx.world_size)] for b in batches]


def example_seed(seed: int, rank: int | None = None) -> int:
    """A seed for rank-local randomness (PGD starts, Poisson draws, augmentation): rank 0 keeps ``seed``,
    so a run of one process draws what a single-process run draws; the other ranks draw independently."""
    rank = context().rank if rank is None else rank
    return seed + 1_000_003 * rank


def decorrelate_ranks(defense, seed: int) -> None:
    """On ranks > 0, reseed what should differ between ranks: the global generators (augmentation, Poisson
    encoding) and the defense's example generator (PGD random starts). Generators that must agree on all
    ranks are left alone: the data order (the caller's) and RAT's row choice, which changes the weights."""
    ctx = context()
    if ctx.rank == 0:
        return
    local = example_seed(seed, ctx.rank)
    random.seed(local)
    np.random.seed(local % 2**32)
    torch.manual_seed(local)
    defense.reseed_examples(local)


def on_main(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Run ``fn`` on rank 0 only (e.g. a file write) and return its result there (None elsewhere). A
    UserError it raises is raised on every rank, so no rank waits forever for one that stopped."""
    ctx = context()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn(*args, **kwargs)
        except UserError as e:
            error = str(e)
    error = broadcast_object(error)
    if error is not None:
        raise UserError(error)
    return result


@torch.no_grad()
def sharded_accuracy(model: nn.Module, dataset, batch_size: int, device: torch.device) -> float:
    """Accuracy on ``dataset`` in eval mode, each rank taking a shard, summed over ranks; the same value on
    every rank. Call broadcast_buffers first unless BatchNorm statistics agree across ranks."""
    indices = shard_indices(len(dataset))
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    with eval_mode(model):
        for start in range(0, len(indices), batch_size):
            batch = [dataset[i] for i in indices[start:start + batch_size]]
            x = torch.stack([b[0] for b in batch]).to(device)
            y = torch.as_tensor([int(b[1]) for b in batch], device=device)
            counts[0] += (model(x).argmax(1) == y).sum()
            counts[1] += y.numel()
    all_reduce_sum(counts)
    return (counts[0] / counts[1].clamp(min=1)).item()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; the tensor unchanged when single-process."""
    if context().distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_ranks_true(flag: torch.Tensor | bool, device: torch.device | None = None) -> bool:
    """True when ``flag`` holds on every rank (one small all-reduce), so that all ranks take the same
    branch, e.g. all stop together when any of them diverged."""
    t = torch.as_tensor(flag, device=device).to(torch.int32).reshape(1)
    if context().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to all ranks, e.g. before a sharded
    validation, so that every rank evaluates the model rank 0 saves."""
    if context().distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. a decision or an error message only rank 0 can make)."""
    if not context().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


# ---------------------------------------------------------------------------------------------------------
# evaluation


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Rank ``rank``'s share of sample indices 0..n-1: a contiguous block, block sizes differ by at most
    one, so concatenating the shards in rank order gives back 0..n-1."""
    ctx = context()
    rank = ctx.rank if rank is None else rank
    world = ctx.world_size if world_size is None else world_size
    if n < 0 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad shard request n={n}, rank={rank}, world_size={world}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (rank < extra)))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` when single-process."""
    if not context().distributed:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
