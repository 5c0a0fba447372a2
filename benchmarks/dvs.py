"""CIFAR10-DVS costs: reading + framing a recording, the frame cache, a DVS training step, event attacks.

1. Reading (AEDAT 2.0 and AEDAT 4 lz4) and framing (T = 10 by count, 48 x 48) one recording of --events
   random events (CIFAR10-DVS recordings hold about 1e5-3e5), projected to the 10,000 recordings of the
   first conversion; then a synthetic set (--per-class recordings of each class, AEDAT 2.0) loaded through
   the cache: first conversion (cache deleted) against the cached reload, interleaved.
2. One training step (vanilla and SR, --batch) of the paper's DVS VGG-11 (2 x 48 x 48 frames, T = 10)
   against the CIFAR-10 VGG-11 (3 x 32 x 32, T = 8), interleaved.
3. On the synthetic set's test split, with the small dvs_cnn trained on its training split for a few
   epochs: sparse-events (events-l0, --budget events, --attack-steps) against PGD-20 (frames-linf, eps
   8/255 of the frame range, step 2.5 eps / 20, random start, keep-best, early stop; the suite's PGD) and
   the textbook PGD-20 (last iterate, no early stop), all under one estimator, on the same batch.

    python benchmarks/dvs.py --threads 1 --out benchmarks/results/cpu_dvs.json

Ratios within one run are the claim; absolute seconds depend on the machine and its load. Files are
written just before they are read, so reading times are from the page cache, not from a cold disk.
The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import (
    DEFENSES,
    Stepper,
    cifar_batch,
    cifar_model,
    emit,
    environment,
    interleaved_times,
    medians_and_ratios,
    parse_run_args,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test writers of both formats
from dvs_files import (
    random_events,
    write_aedat2,
    write_aedat4,
    write_synthetic_recordings,
)

from spikeguard.attacks import pgd
from spikeguard.attacks.events import sparse_events, within_event_budget
from spikeguard.data.aedat import read_events
from spikeguard.data.cifar10_dvs import (
    convert,
    find_class_root,
    frame_range,
    list_recordings,
    load_cifar10_dvs,
    load_frames,
)
from spikeguard.data.dvs_options import DvsOptions
from spikeguard.data.event_frames import events_to_frames
from spikeguard.models import ModelSpec, create_model
from spikeguard.runtime import eval_mode
from spikeguard.snn.control import estimator

RECORDINGS = 10_000  # CIFAR10-DVS
FRAMES, SIZE = 10, 48  # the release's frames: T = 10 by event count, 48 x 48


def _round(d: dict, digits: int = 4) -> dict:
    return {k: round(v, digits) for k, v in d.items()}


def reading(args, folder: Path, device: torch.device) -> dict:
    """Per recording: read (each format) and frame, timed in turn; projected to the whole data set."""
    x, y, p, t = random_events(np.random.default_rng(0), args.events)
    files = {"aedat2": folder / "one.aedat", "aedat4_lz4": folder / "one.aedat4"}
    write_aedat2(files["aedat2"], x, y, p, t)
    write_aedat4(files["aedat4_lz4"], x, y, p, t, compression="lz4")
    events = read_events(files["aedat2"])
    assert len(events) == args.events and len(read_events(files["aedat4_lz4"])) == args.events
    calls = {f"read_{k}": (lambda f=f: read_events(f)) for k, f in files.items()}
    calls["frames"] = lambda: events_to_frames(events, FRAMES, "count", SIZE)
    times = interleaved_times(calls, args.read_rounds, 2, device)
    out = medians_and_ratios(times, None)
    wall = out["wall_seconds"]
    per_recording = {k: wall[f"read_{k}"] + wall["frames"] for k in files}
    out.update({
        "events_per_recording": args.events,
        "file_bytes": {k: f.stat().st_size for k, f in files.items()},
        "wall_seconds_read_and_frame": per_recording,
        "wall_ratio_aedat4_lz4_to_aedat2": per_recording["aedat4_lz4"] / per_recording["aedat2"],
        "projected_first_conversion_seconds": {k: v * RECORDINGS for k, v in per_recording.items()},
        "projection": f"{RECORDINGS} x (read + frame) of one recording, one thread, files in the page cache",
    })
    print("reading + framing per recording (ms)", _round({k: 1e3 * v for k, v in per_recording.items()}, 2),
          flush=True)
    return out


def cache(args, folder: Path, device: torch.device) -> tuple[dict, Path]:
    """A synthetic set through load_frames: first conversion (cache deleted) vs cached reload, in turn."""
    data_dir = folder / "set"
    write_synthetic_recordings(data_dir, args.per_class, "aedat2", seed=0, events_per_sample=args.events)
    cache_dir = folder / "cache"
    options = DvsOptions(frames=FRAMES, size=SIZE, cache_dir=str(cache_dir))

    def first():
        shutil.rmtree(cache_dir, ignore_errors=True)
        load_frames(data_dir, options, progress=False)

    files, _ = list_recordings(find_class_root(data_dir))
    counts, everything = convert(files, options, progress=False), np.arange(len(files))
    times = interleaved_times({"first_conversion": first,
                               "cached_reload": lambda: load_frames(data_dir, options, progress=False),
                               # the stages of a first load, alone: the rest is the compressed cache write
                               "stage_convert": lambda: convert(files, options, progress=False),
                               "stage_frame_range": lambda: frame_range(counts, everything)},
                              args.cache_rounds, 0, device)
    out = medians_and_ratios(times, "cached_reload")
    n = args.per_class * 10
    _, _, r = load_frames(data_dir, options, progress=False)
    wall = out["wall_seconds"]
    out["first_conversion_share"] = {k: wall[f"stage_{k}"] / wall["first_conversion"]
                                     for k in ("convert", "frame_range")}
    out["first_conversion_share"]["cache_write_and_rest"] = 1 - sum(out["first_conversion_share"].values())
    out.update({
        "recordings": n, "events_per_recording": args.events, "format": "aedat2",
        "frame_range": r, "frame_bytes_uint16": counts.nbytes,
        "cache_bytes": sum(f.stat().st_size for f in cache_dir.iterdir()),
        "projected_first_conversion_seconds": out["wall_seconds"]["first_conversion"] * RECORDINGS / n,
        "projection": f"this set's whole first load (read, frame, frame range, compressed cache write) x {RECORDINGS}"
                      f" / {n}",
    })
    print("cache (s)", _round(out["wall_seconds"]), "first/cached",
          round(out["wall_ratio_to_cached_reload"]["first_conversion"], 1), flush=True)
    return out, data_dir


def dvs_vgg(device: torch.device):
    torch.manual_seed(0)
    spec = ModelSpec("vgg11", 10, 2, SIZE, (0.0, 0.0), (1.0, 1.0), time_steps=FRAMES, encoder="frames")
    return create_model(spec).to(device).train()


def train_steps(args, device: torch.device) -> dict:
    """One step of each defense on each model, in turn (lr 0: every step sees the same weights)."""
    dvs, cifar = dvs_vgg(device), cifar_model("vgg11", 8, device)
    g = torch.Generator().manual_seed(0)
    frames = (torch.randint(0, 11, (args.batch, FRAMES, 2, SIZE, SIZE), generator=g) / 10).to(device)
    labels = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    images, image_labels = cifar_batch(args.batch, device)
    calls = {}
    for d in args.defenses:
        on_dvs, on_cifar = Stepper(dvs, d), Stepper(cifar, d)
        calls[f"dvs_{d}"] = lambda s=on_dvs: s(frames, labels)
        calls[f"cifar_{d}"] = lambda s=on_cifar: s(images, image_labels)
    times = interleaved_times(calls, args.step_rounds, 1, device)
    out = {**medians_and_ratios(times, f"cifar_{args.defenses[0]}"), "all_seconds": times,
           "batch": args.batch, "dvs_model": f"vgg11, 2 x {SIZE} x {SIZE} frames, T = {FRAMES}",
           "cifar_model": "vgg11, 3 x 32 x 32 images, T = 8 (direct encoding)",
           "defense_settings": {d: DEFENSES[d] for d in args.defenses}}
    for kind in ("wall", "cpu"):
        med = out[f"{kind}_seconds"]
        out[f"{kind}_ratio_dvs_to_cifar"] = {d: med[f"dvs_{d}"] / med[f"cifar_{d}"] for d in args.defenses}
    print("train step (s)", _round(out["wall_seconds"], 3), "dvs/cifar", _round(out["wall_ratio_dvs_to_cifar"], 2),
          flush=True)
    return out


def small_model(args, data, device: torch.device):
    """dvs_cnn trained briefly on the synthetic training split, so the attacks face a model that is right."""
    torch.manual_seed(0)
    spec = ModelSpec("dvs_cnn", 10, 2, SIZE, data.mean, data.std, time_steps=FRAMES, encoder="frames")
    model = create_model(spec).to(device).train()
    x = torch.stack([data.train[i][0] for i in range(len(data.train))]).to(device)
    y = torch.as_tensor([data.train[i][1] for i in range(len(data.train))]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.train_epochs):
        for idx in torch.randperm(len(y), generator=g).split(16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def attacks(args, data_dir: Path, device: torch.device) -> dict:
    data = load_cifar10_dvs(str(data_dir), val_fraction=0.1, seed=0, augment=False,
                            dvs={"frames": FRAMES, "size": SIZE, "cache_dir": str(data_dir.parent / "cache")},
                            progress=False)
    r = data.frame_range
    start = time.perf_counter()
    model = small_model(args, data, device)
    train_seconds = time.perf_counter() - start
    n = min(args.attack_n, len(data.test))
    x = torch.stack([data.test[i][0] for i in range(n)]).to(device)
    y = torch.as_tensor([data.test[i][1] for i in range(n)]).to(device)
    eps, steps = args.eps, 20
    adv: dict[str, torch.Tensor] = {}

    def run(name, make):
        def call():
            with eval_mode(model), estimator(model, args.estimator):
                adv[name] = make()
        return call

    calls = {
        "sparse_events": run("sparse_events", lambda: sparse_events(model, x, y, args.budget, r, args.attack_steps)),
        "pgd20": run("pgd20", lambda: pgd(model, x, y, eps, 2.5 * eps / steps, steps,
                                          generator=torch.Generator().manual_seed(0))),
        "pgd20_textbook": run("pgd20_textbook", lambda: pgd(model, x, y, eps, 2.5 * eps / steps, steps,
                                                            generator=torch.Generator().manual_seed(0),
                                                            keep_best=False)),
    }
    times = interleaved_times(calls, args.attack_rounds, 0, device)
    out = medians_and_ratios(times, "pgd20")
    within_event_budget(adv["sparse_events"], x, args.budget, r)  # raises if the attack left its budget
    with torch.no_grad():
        accuracy = {"clean": (model(x).argmax(1) == y).float().mean().item()}
        accuracy.update({k: (model(v).argmax(1) == y).float().mean().item() for k, v in adv.items()})
    unbroken = all(v == accuracy["clean"] for v in accuracy.values())
    out.update({
        "note": "no attack broke any correctly classified sample, so each ran all its steps on every one of "
                "them: the ratios compare full costs" if unbroken else "both attacks stop on a sample once it is misclassified, so their times "
                "also depend on how fast each breaks samples",
        "model": f"dvs_cnn, 2 x {SIZE} x {SIZE} frames, T = {FRAMES}, trained {args.train_epochs} epochs "
                 f"({train_seconds:.1f} s) on the synthetic training split ({len(data.train)} recordings)",
        "n": n, "estimator": args.estimator, "frame_range": r, "accuracy": accuracy,
        "events_changed_per_sample_max": ((adv["sparse_events"] - x) * r).round().abs().flatten(1).sum(1).max().item(),
        "settings": {"sparse_events": {"budget": args.budget, "steps": args.attack_steps},
                     "pgd20": {"threat_model": "frames-linf", "eps": eps, "eps_events_per_bin": eps * r,
                               "alpha": 2.5 * eps / steps, "random_start": True, "keep_best": True,
                               "early_stop": True},
                     "pgd20_textbook": {"keep_best": False, "early_stop": False}},
    })
    print("attacks (s)", _round(out["wall_seconds"], 3), "accuracy", _round(accuracy, 3), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per recording")
    parser.add_argument("--per-class", type=int, default=20, help="synthetic recordings per class (cache, attacks)")
    parser.add_argument("--read-rounds", type=int, default=15)
    parser.add_argument("--cache-rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--defenses", default="vanilla,sr", help="training-step defenses (first: the reference)")
    parser.add_argument("--step-rounds", type=int, default=3, help="timed rounds (one step of each per round)")
    parser.add_argument("--train-epochs", type=int, default=6, help="epochs of the small model before the attacks")
    parser.add_argument("--attack-n", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100, help="sparse-events: events changed per sample")
    parser.add_argument("--attack-steps", type=int, default=20, help="sparse-events steps (the suite's default)")
    parser.add_argument("--eps", type=float, default=8 / 255, help="PGD's frames-linf eps, relative to R")
    parser.add_argument("--estimator", default="triangle:1")
    parser.add_argument("--attack-rounds", type=int, default=3)
    parser.add_argument("--skip", default="", help="sections to skip: reading,cache,train_step,attacks "
                                                   "(attacks need cache)")
    args, device = parse_run_args(parser)
    args.defenses = [d for d in args.defenses.split(",") if d]
    skip = set(filter(None, args.skip.split(",")))
    result = {"benchmark": "dvs", "environment": environment(device), "T": FRAMES, "size": SIZE}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "reading" not in skip:
            result["reading"] = reading(args, folder, device)
        if "cache" not in skip:
            result["cache"], data_dir = cache(args, folder, device)
            if "attacks" not in skip:
                result["attacks"] = attacks(args, data_dir, device)
        if "train_step" not in skip:
            result["train_step"] = train_steps(args, device)
    result["benchmark_seconds"] = time.perf_counter() - start
    result["summary"] = summary(result)
    emit(result, args.out)


def summary(result: dict) -> dict:
    """The headline ratios (wall; CPU beside them in each section)."""
    s = {}
    if "reading" in result:
        s["aedat4_lz4_over_aedat2_read_and_frame"] = result["reading"]["wall_ratio_aedat4_lz4_to_aedat2"]
        s["projected_first_conversion_10000_seconds"] = result["reading"]["projected_first_conversion_seconds"]
    if "cache" in result:
        s["first_conversion_over_cached_reload"] = result["cache"]["wall_ratio_to_cached_reload"]["first_conversion"]
    if "train_step" in result:
        s["dvs_vgg11_over_cifar_vgg11_step"] = result["train_step"]["wall_ratio_dvs_to_cifar"]
    if "attacks" in result:
        ratios = result["attacks"]["wall_ratio_to_pgd20"]
        s["sparse_events_over_pgd20"] = ratios["sparse_events"]
        s["sparse_events_over_pgd20_textbook"] = ratios["sparse_events"] / ratios["pgd20_textbook"]
        s["attack_accuracy"] = result["attacks"]["accuracy"]
    return {k: ({kk: round(vv, 3) for kk, vv in v.items()} if isinstance(v, dict) else round(v, 3))
            for k, v in s.items()}


if __name__ == "__main__":
    main()
