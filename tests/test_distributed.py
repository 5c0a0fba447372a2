"""DistributedDataParallel training equals single-process training on the concatenated batch.

Two gloo processes on the CPU each take half of every batch; one process takes the whole batch. After
two steps (DDP reports a parameter left without gradient only at the next step; two also exercise the
momentum and RAT's retraction) the parameters must agree for every defense.

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

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_spec
from torch.nn.parallel import DistributedDataParallel

from spikeguard.checkpoint import read_checkpoint
from spikeguard.defenses import create_defense
from spikeguard.distributed import (
    DistContext,
    ObjectiveModule,
    all_ranks_true,
    broadcast_buffers,
    close_distributed,
    context,
    decorrelate_ranks,
    distributed_sampler,
    gather_objects,
    init_distributed,
    on_main,
    per_rank_batch_size,
    rank_batches,
    shard_indices,
    sharded_accuracy,
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
            torch.save(_ddp_steps(name, device, batches, rank, world), out_dir / f"{name}-{rank}.pt")
        torch.save(_helpers(rank, batches), out_dir / f"helpers-{rank}.pt")
    finally:
        close_distributed()


def _ddp_steps(name, device, batches, rank, world):
    """The parameters after the steps; the DDP wrapper is gone when this returns, before the group is closed."""
    model, defense, opt = _fresh(name)
    objective = wrap_objective(model, defense, device)
    assert isinstance(objective, DistributedDataParallel)
    return _train(objective, model, defense, opt, batches, rank, world)


def _helpers(rank, batches):
    """What each rank sees of the smaller helpers, checked by the parent."""
    seen = {"gathered": gather_objects([(i, i * i) for i in shard_indices(11)])}
    seen["batches"] = rank_batches(list(range(10)), 4, drop_last=False)
    seen["sampler"] = list(distributed_sampler(range(9), seed=0, shuffle=False))
    seen["all_true"] = (all_ranks_true(True), all_ranks_true(rank == 0))
    try:
        on_main(lambda: (_ for _ in ()).throw(UserError("disk full")))
        seen["on_main"] = None
    except UserError as e:
        seen["on_main"] = str(e)
    model, defense, _ = _fresh("at")
    for m in model.modules():  # rank-local running statistics, then rank 0's everywhere
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(rank + 1.0)
    broadcast_buffers(model)
    seen["buffer"] = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean[0].item()
    x, y = batches[0]
    dataset = list(zip(x, y.tolist()))
    seen["accuracy"] = sharded_accuracy(model, dataset, 5, torch.device("cpu"))
    decorrelate_ranks(defense, seed=0)
    seen["pgd_start"] = torch.rand(3, generator=defense.examples.generator)
    seen["global_draw"] = torch.rand(3)
    return seen


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

    _check_helpers([torch.load(tmp_path / f"helpers-{r}.pt", weights_only=False) for r in range(WORLD)], batches)


def _check_helpers(seen, batches):
    rows = [[(i, i * i) for i in range(6)], [(i, i * i) for i in range(6, 11)]]
    assert seen[0]["gathered"] == seen[1]["gathered"] == rows  # shards cover 0..10 once, in rank order
    assert seen[0]["batches"] == [[0, 1], [4, 5], [8]] and seen[1]["batches"] == [[2, 3], [6, 7], [9]]
    assert sorted(seen[0]["sampler"] + seen[1]["sampler"]) == sorted([*range(9), 0])  # padded to even
    assert seen[0]["all_true"] == seen[1]["all_true"] == (True, False)
    assert seen[0]["on_main"] == seen[1]["on_main"] == "disk full"  # raised on the rank that did not run it too
    assert seen[0]["buffer"] == seen[1]["buffer"] == 1.0
    model, _, _ = _fresh("at")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(1.0)
    x, y = batches[0]
    with torch.no_grad():
        expected = (model.eval()(x).argmax(1) == y).double().mean().item()
    assert seen[0]["accuracy"] == seen[1]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert not torch.equal(seen[0]["pgd_start"], seen[1]["pgd_start"])  # ranks draw their own starts
    assert not torch.equal(seen[0]["global_draw"], seen[1]["global_draw"])
    assert torch.equal(seen[0]["pgd_start"], torch.rand(3, generator=torch.Generator().manual_seed(0)))  # rank 0 as one process


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
    assert rank_batches(list(range(5)), 2, drop_last=True) == [[0, 1], [2, 3]]
    assert distributed_sampler(range(5), seed=0) is None and on_main(lambda: 7) == 7
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


def _spikeguard(*args, nproc: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "spikeguard"]
    if nproc > 1:  # torchrun, as a user would start it
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                  "-m", "spikeguard"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launch, *args], check=False, capture_output=True, text=True, timeout=timeout, env=env)


def test_torchrun_training_writes_once_and_resumes_at_another_world_size(tmp_path):
    run = tmp_path / "run"
    done = _spikeguard("train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--time-steps", "2",
                       "--device", "cpu", "--checkpoint-every", "5", "--no-progress", "--out", str(run), nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]  # one line: rank 1 wrote nothing
    assert metrics[0]["val_accuracy"] > 0.3  # it learned (chance is 0.1)
    first = read_checkpoint(run / "last.pt")
    assert first["epoch"] == 1 and first["step"] == 0

    done = _spikeguard("train", "--resume", str(run), "--epochs", "2", "--no-progress")  # one process now
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert read_checkpoint(run / "last.pt")["epoch"] == 2


TINY_SUITE = {"name": "tiny", "checks": {"unbounded_n": 4, "unbounded_steps": 2},
              "escalation": {"decision_queries": 50, "substitute_epochs": 2, "substitute_queries": 200, "transfer_steps": 5,
                             "estimate_steps": 5, "estimate_directions": 8, "square_queries": 50, "square_restarts": 1},
              "attacks": [{"attack": "fgsm", "estimators": ["triangle:1"]},
                          {"attack": "pgd", "steps": 5, "estimators": ["triangle:1"]}]}
MARK_SECONDS = 1000.0  # a kept batch's recorded attack time: shows in the total only if it was taken as stored


def test_torchrun_evaluate_resume_takes_the_kept_batches_and_equals_one_uninterrupted_process(tmp_path, monkeypatch):
    """A one-process evaluation interrupted after two of its four batches, resumed by two torchrun processes:
    the kept batches are taken as they are (not attacked again), the others shared out, and the result is
    the uninterrupted run's, CSV included."""
    import yaml

    from spikeguard.cli import main
    from spikeguard.evaluation.batch_store import BatchStore

    run, suite = tmp_path / "run", tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--time-steps", "2", "--out", str(run),
                 "--no-progress"]) == 0

    def evaluate(out, *extra):
        return ["evaluate", str(run), "--suite", str(suite), "--num-samples", "24", "--batch-size", "6",
                "--device", "cpu", "--no-progress", "--out", str(out), *extra]

    whole, resumed = tmp_path / "whole.json", tmp_path / "resumed.json"
    assert main(evaluate(whole)) == 0
    saved = []
    original = BatchStore.save

    def save_then_stop(self, number, rows, seconds):  # the process is stopped after its second batch
        original(self, number, rows, {k: MARK_SECONDS for k in seconds})
        saved.append(number)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(BatchStore, "save", save_then_stop)
    assert main(evaluate(resumed)) != 0 and saved == [0, 1] and not resumed.exists()
    monkeypatch.undo()
    done = _spikeguard(*evaluate(resumed, "--resume"), nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    got, expected = json.loads(resumed.read_text()), json.loads(whole.read_text())
    assert got["ranks"] == 2 and expected["ranks"] == 1
    assert resumed.with_suffix(".csv").read_text() == whole.with_suffix(".csv").read_text()
    for key in ("clean_accuracy", "ensemble_accuracy", "flags", "unbounded_accuracy", "n"):
        assert got[key] == expected[key], key
    assert [a["accuracy"] for a in got["attacks"]] == [a["accuracy"] for a in expected["attacks"]]
    assert all(a["seconds"] >= 2 * MARK_SECONDS for a in got["attacks"])  # batches 0 and 1 as kept
    assert all(a["seconds"] < MARK_SECONDS for a in expected["attacks"])
    assert not (tmp_path / ".resumed.json.batches").exists()
