"""What the benchmark scripts share: models, defenses as benchmarked, step timing, peak memory, JSON out.

Ratios measured within one run are the claim; absolute seconds depend on the machine and its load.
Timings interleave the variants being compared (one step of each in turn, median over rounds), so a
change in background load hits all of them alike. Besides wall time, the process's CPU time is recorded
per step (all threads): on a CPU shared with other jobs, wall time also counts the time the process
waited for a core, CPU time does not.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikeguard.defenses import create_defense
from spikeguard.distributed import ObjectiveModule
from spikeguard.models import ModelSpec, create_model
from spikeguard.snn.control import spiking_layers
from spikeguard.speed import (
    SpeedOptions,
    autocast,
    configure_backends,
    prepare_model,
    to_memory_format,
)

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
EPS, PGD_ALPHA = 8 / 255, 2.55 / 255  # the paper's CIFAR settings
DEFENSES = {
    "vanilla": {"name": "vanilla"},
    "sr": {"name": "sr", "lamb": 0.002},
    "sr_star": {"name": "sr_star", "lamb": 0.002, "attack": "pgd", "steps": 7, "eps": EPS, "alpha": PGD_ALPHA},
    "at_pgd7": {"name": "at", "attack": "pgd", "steps": 7, "eps": EPS, "alpha": PGD_ALPHA},
    "rat": {"name": "rat"},
    "gr": {"name": "gr", "lamb": 0.01},
}


def cifar_model(name: str, time_steps: int, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    spec = ModelSpec(name, 10, 3, 32, CIFAR_MEAN, CIFAR_STD, time_steps=time_steps)
    return create_model(spec).to(device).train()


def cifar_batch(batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


class Stepper:
    """One training step of one defense on one model: objective, backward, SGD step, after_step.

    The learning rate is 0 so that several steppers can share a model and each step sees the same
    weights (all the arithmetic of a real step still runs; RAT's retraction still moves the weights).
    """

    def __init__(self, model, defense: str, options: SpeedOptions | None = None, forward=None):
        self.model, self.options = model, options or SpeedOptions()
        self.defense = create_defense(**DEFENSES[defense])
        self.objective = ObjectiveModule(forward if forward is not None else model, self.defense)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4)
        self.device = next(model.parameters()).device

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(self.device, self.options.bf16):
            loss, _ = self.objective(to_memory_format(x, self.options), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.defense.after_step(self.model)


def prepared(name: str, time_steps: int, device: torch.device, options: SpeedOptions):
    """(model, the module to call) with the speed options applied."""
    configure_backends(options)
    model = cifar_model(name, time_steps, device)
    return model, prepare_model(model, options)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(calls: dict[str, Callable[[], None]], rounds: int, warmup: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds per call of each entry, timing them in turn round by round after ``warmup`` rounds."""
    return {k: statistics.median(v) for k, v in interleaved_times(calls, rounds, warmup, device)["wall"].items()}


def interleaved_times(calls: dict[str, Callable[[], None]], rounds: int, warmup: int,
                      device: torch.device) -> dict[str, dict[str, list[float]]]:
    """{"wall": {entry: seconds of each timed call}, "cpu": {entry: CPU seconds of each}}, timing the entries
    in turn round by round after ``warmup`` rounds."""
    times: dict[str, dict[str, list[float]]] = {"wall": {k: [] for k in calls}, "cpu": {k: [] for k in calls}}
    for r in range(warmup + rounds):
        for key, fn in calls.items():
            synchronize(device)
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            if r >= warmup:
                times["wall"][key].append(time.perf_counter() - start)
                times["cpu"][key].append(time.process_time() - cpu)
    return times


def medians_and_ratios(times: dict[str, dict[str, list[float]]], reference: str | None) -> dict:
    """Median wall and CPU seconds per entry and, with a reference entry, each entry's ratio to it."""
    out = {f"{kind}_seconds": {k: statistics.median(v) for k, v in series.items()} for kind, series in times.items()}
    if reference is not None:
        for kind in times:
            med = out[f"{kind}_seconds"]
            if reference in med:
                out[f"{kind}_ratio_to_{reference}"] = {k: v / med[reference] for k, v in med.items()}
    return out


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict that gets "peak_mb": on CUDA the peak of torch.cuda.max_memory_allocated above what
    was allocated at entry (tensors only); on Linux CPUs the peak resident set size above the resident
    size at entry (VmHWM after resetting it through /proc/self/clear_refs, after malloc_trim returned
    freed heap to the OS). The CPU figure includes allocator slack and is comparable between variants of
    one run, not to the CUDA figure."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        synchronize(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        out["measures"] = "cuda max_memory_allocated above entry"
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _proc_status_kb("VmRSS")
    except OSError:
        yield out
        out["peak_mb"], out["measures"] = None, "unavailable (needs Linux /proc)"
        return
    yield out
    out["peak_mb"] = (_proc_status_kb("VmHWM") - base) / 1024
    out["measures"] = "peak RSS above entry (VmHWM after clear_refs)"


class NeuronClock:
    """Wall time spent inside the spiking layers, forward and backward, via module hooks.

    Forward: pre and post hooks. Backward: full backward pre and post hooks, which bracket the layer's own
    backward nodes (the CPU autograd engine runs them in between, one thread). On CUDA the clock
    synchronises at every hook, which slows the step; the share is what it reports.
    """

    def __init__(self, model, device: torch.device):
        self.device, self.seconds, self._open = device, 0.0, {}
        self._handles = []
        for layer in spiking_layers(model):
            self._handles += [layer.register_forward_pre_hook(self._start("f")),
                              layer.register_forward_hook(self._stop("f")),
                              layer.register_full_backward_pre_hook(self._start("b")),
                              layer.register_full_backward_hook(self._stop("b"))]

    def _start(self, kind):
        def hook(module, *args):
            synchronize(self.device)
            self._open[(id(module), kind)] = time.perf_counter()
        return hook

    def _stop(self, kind):
        def hook(module, *args):
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._open.pop((id(module), kind))
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def neuron_share(step: Callable[[], None], model, device: torch.device, repeats: int = 1) -> dict[str, float]:
    """Share of one step's wall time spent in the spiking layers (median over ``repeats``)."""
    shares, seconds = [], []
    clock = NeuronClock(model, device)
    try:
        for _ in range(repeats):
            clock.seconds = 0.0
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            total = time.perf_counter() - start
            shares.append(clock.seconds / total)
            seconds.append(total)
    finally:
        clock.remove()
    return {"share": statistics.median(shares), "step_seconds_with_hooks": statistics.median(seconds)}


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "processor": platform.processor()}
    if hasattr(os, "getloadavg"):
        env["load_average_at_start"] = os.getloadavg()[0]
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def emit(result: dict, out: str | None) -> None:
    """Print the result as the last line of output (one JSON object); also write it to ``out``."""
    text = json.dumps(result)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(text, flush=True)


THREADS_HELP = ("intra-op threads (default: torch's). 1 makes CPU time count only work: with 2 or more threads on a "
                "shared CPU, a thread that waits for a descheduled partner spins and inflates both clocks")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def pick(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_run_args(parser) -> tuple:
    """Add the flags every benchmark shares (--device, --threads, --out), parse, pick the device and set
    the thread count: (args, device)."""
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    parser.add_argument("--out")
    args = parser.parse_args()
    set_threads(args.threads)
    return args, pick(args.device)
