"""CPU DistributedDataParallel: 2 gloo processes against 1 process, per defense.

Three set-ups, each in fresh processes, same model and global batch B:
  ddp_2proc_1thread   2 gloo processes, 1 thread each, B / 2 samples each (gradients all-reduced)
  single_1thread_half 1 process, 1 thread, B / 2 samples: the per-rank work without communication, so
                      ddp / single_1thread_half - 1 is the DDP overhead per step
  single_2thread_full 1 process, 2 threads, B samples: the other way to use the same 2 cores
Set-ups run one after another (defenses in turn within each), so a change in background load between
them shows up in the ratios; the JSON records the load average. The last output line is one JSON object.

  python benchmarks/ddp_cpu.py [--model vgg11] [--batch 4] [--defenses vanilla,sr]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from common import DEFENSES, cifar_batch, cifar_model, emit, environment

from spikeguard.defenses import create_defense
from spikeguard.distributed import close_distributed, init_distributed, wrap_objective

SETUPS = {  # name: (processes, threads per process, share of the global batch per process)
    "ddp_2proc_1thread": (2, 1, 2),
    "single_1thread_half": (1, 1, 2),
    "single_2thread_full": (1, 2, 1),
}


def _worker(rank: int, world: int, port: int, threads: int, per_rank: int, args: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    _, device = init_distributed("cpu")
    try:
        x, y = cifar_batch(args["batch"], device)
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
        seconds, cpu_seconds = {}, {}
        for name in args["defenses"]:
            model = cifar_model(args["model"], args["time_steps"], device)
            defense = create_defense(**DEFENSES[name])
            objective = wrap_objective(model, defense, device)
            opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4)
            times, cpu = [], []
            for i in range(args["warmup"] + args["steps"]):
                start, start_cpu = time.perf_counter(), time.process_time()
                loss, _ = objective(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                defense.after_step(model)
                if i >= args["warmup"]:
                    times.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
            seconds[name], cpu_seconds[name] = statistics.median(times), statistics.median(cpu)
        if rank == 0:  # rank 0's CPU seconds: one process of the set-up
            Path(out).write_text(json.dumps({"wall": seconds, "cpu_rank0": cpu_seconds}))
    finally:
        close_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg11")
    parser.add_argument("--batch", type=int, default=4, help="global batch (even)")
    parser.add_argument("--time-steps", type=int, default=8)
    parser.add_argument("--defenses", default="vanilla,sr")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.batch % 2:
        parser.error("--batch must be even")
    run_args = {"model": args.model, "batch": args.batch, "time_steps": args.time_steps, "steps": args.steps,
                "warmup": args.warmup, "defenses": args.defenses.split(",")}
    params = sum(p.numel() for p in cifar_model(args.model, args.time_steps, torch.device("cpu")).parameters())
    result = {"benchmark": "ddp_cpu", **run_args, "parameters": params,
              "environment": environment(torch.device("cpu")), "seconds_per_step": {}, "cpu_seconds_per_step_rank0": {},
              "load_average": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for setup, (procs, threads, split) in SETUPS.items():
            out = os.path.join(tmp, f"{setup}.json")
            mp.spawn(_worker, args=(procs, _free_port(), threads, args.batch // split, run_args, out), nprocs=procs)
            measured = json.loads(Path(out).read_text())
            result["seconds_per_step"][setup] = measured["wall"]
            result["cpu_seconds_per_step_rank0"][setup] = measured["cpu_rank0"]
            result["load_average"][setup] = os.getloadavg()[0]
            print(setup, result["seconds_per_step"][setup], flush=True)
    s = result["seconds_per_step"]
    result["ddp_overhead"] = {d: s["ddp_2proc_1thread"][d] / s["single_1thread_half"][d] - 1 for d in run_args["defenses"]}
    c = result["cpu_seconds_per_step_rank0"]
    result["ddp_overhead_cpu_time"] = {d: c["ddp_2proc_1thread"][d] / c["single_1thread_half"][d] - 1
                                       for d in run_args["defenses"]}
    result["ddp_speedup_over_one_2thread_process"] = {
        d: s["single_2thread_full"][d] / s["ddp_2proc_1thread"][d] for d in run_args["defenses"]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
