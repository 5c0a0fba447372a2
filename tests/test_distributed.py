"""DistributedDataParallel training equals single-process training on the concatenated batch.

Two gloo processes on the CPU each take half of every batch; one process takes the whole batch. After
two steps (the second step would fail if DDP's reducer were armed wrongly by the inner passes) the
parameters must agree for every defense.

How the comparison is made exact:
* float64 throughout, so summation-order differences (~1e-16) cannot move a membrane potential across
  the threshold; the tolerance is 1e-9 on every parameter and buffer.
* BatchNorm layers run in eval mode (running statistics): PyTorch's SyncBatchNorm, which would make
  training-mode statistics equal to those of the concatenated batch, runs on CUDA only. Their affine
  weights still train and are synchronised.
* PGD's random start (AT, SR*) draws its noise for a whole batch from one generator; each rank skips the
  draws that belong to the samples before its half, so every sample gets the same start in both runs.
  FGSM (RAT) and the SR / GR passes are deterministic.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_spec
from torch.nn.parallel import DistributedDataParallel

from spikeguard.defenses import create_defense
from spikeguard.distributed import (
    DistContext,
    ObjectiveModule,
    close_distributed,
    context,
    gather_objects,
    init_distributed,
    per_rank_batch_size,
    shard_indices,
    wrap_objective,
)
from spikeguard.errors import UserError
from spikeguard.models import create_model

WORLD, BATCH, STEPS, TOL = 2, 16, 2, 1e-9
PGD = {"attack": "pgd", "steps": 2, "eps": 0.1, "alpha": 0.05}
DEFENSE_KW = {
    "vanilla": {},
    "at": PGD,
    "rat": {"beta": 0.01},
    "gr": {"lamb": 0.05},
    "sr": {"lamb": 0.5, "h": 0.05},
    "sr_star": {"lamb": 0.5, "h": 0.05, **PGD},
}


def _fresh(name):
    torch.manual_seed(0)
    model = create_model(tiny_spec()).double().train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    defense = create_defense(name, seed=0, **DEFENSE_KW[name])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    return model, defense, opt


def _train(objective, model, defense, opt, batches, rank, world):
    for step, (x, y) in enumerate(batches):
        lo, hi = rank * len(y) // world, (rank + 1) * len(y) // world
        if getattr(defense, "examples", None) is not None:
            defense.examples.generator = torch.Generator().manual_seed(100 + step)
            torch.rand(lo * x[0].numel(), generator=defense.examples.generator)  # skip the other rank's draws
        loss, _ = objective(x[lo:hi], y[lo:hi])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        defense.after_step(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank, world, port, batches, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx, device = init_distributed("cpu")
    try:
        assert ctx == DistContext(rank, world, rank, "gloo") == context() and device.type == "cpu"
        for name in DEFENSE_KW:
            model, defense, opt = _fresh(name)
            objective = wrap_objective(model, defense, device)
            assert isinstance(objective, DistributedDataParallel)
            torch.save(_train(objective, model, defense, opt, batches, rank, world), out_dir / f"{name}-{rank}.pt")
        # evaluation helpers: shards cover 0..n-1 once, gathered in rank order
        rows = [(i, i * i) for i in shard_indices(11)]
        torch.save(gather_objects(rows), out_dir / f"gathered-{rank}.pt")
    finally:
        close_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_ddp_step_of_every_defense_equals_one_process_on_the_concatenated_batch(tmp_path, digits_tensors):
    (x, y), _ = digits_tensors
    batches = [(x[i * BATCH:(i + 1) * BATCH].double(), y[i * BATCH:(i + 1) * BATCH]) for i in range(STEPS)]
    mp.spawn(_worker, args=(WORLD, _free_port(), batches, tmp_path), nprocs=WORLD, join=True)

    for name in DEFENSE_KW:
        model, defense, opt = _fresh(name)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        reference = _train(ObjectiveModule(model, defense), model, defense, opt, batches, 0, 1)
        assert _max_diff(reference, start) > 1e-3, name  # the steps moved the weights
        for rank in range(WORLD):
            got = torch.load(tmp_path / f"{name}-{rank}.pt", weights_only=True)
            assert _max_diff(got, reference) < TOL, (name, rank, _max_diff(got, reference))

        if name == "vanilla":  # the comparison is sensitive: half a batch without gradient sync differs
            model, defense, opt = _fresh(name)
            alone = _train(ObjectiveModule(model, defense), model, defense, opt, batches, 0, WORLD)
            assert _max_diff(alone, reference) > 1e-4

    expected = [[(i, i * i) for i in range(6)], [(i, i * i) for i in range(6, 11)]]
    for rank in range(WORLD):
        assert torch.load(tmp_path / f"gathered-{rank}.pt", weights_only=False) == expected


@pytest.mark.parametrize("n,world", [(0, 3), (1, 2), (10, 3), (11, 2), (64, 8), (5, 7)])
def test_shards_partition_the_indices_in_order(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    assert [i for shard in shards for i in shard] == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_single_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = init_distributed("cpu")
    assert ctx == DistContext() and not ctx.distributed and ctx.is_main and device.type == "cpu"
    assert gather_objects({"a": 1}) == [{"a": 1}]
    assert shard_indices(5) == [0, 1, 2, 3, 4]
    model, defense, _ = _fresh("vanilla")
    objective = wrap_objective(model, defense, device)
    assert isinstance(objective, ObjectiveModule) and objective.model is model


def test_bad_launch_settings_are_user_errors(monkeypatch):
    assert per_rank_batch_size(64, 4) == 16
    with pytest.raises(UserError, match="split evenly"):
        per_rank_batch_size(10, 4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UserError, match="RANK"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="MASTER_ADDR"):
        init_distributed("cpu")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(UserError, match="cuda:LOCAL_RANK"):
        init_distributed("cuda:1")
