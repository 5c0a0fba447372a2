"""The training loop: SGD + cosine schedule, per-epoch validation, metrics.jsonl, last.pt and best.pt.

Checkpoints are selected on the validation split (held out of the training set), never on test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from spikeguard.attacks import eval_mode
from spikeguard.checkpoint import save_checkpoint
from spikeguard.config import TrainConfig
from spikeguard.data import DataSplits, load_dataset
from spikeguard.defenses import create_defense, true_class_probability
from spikeguard.errors import UserError
from spikeguard.models import ModelSpec, SpikingNet, create_model
from spikeguard.results import write_text


@dataclass
class TrainResult:
    run_dir: Path
    model: SpikingNet          # the best-on-validation weights
    best_val_accuracy: float
    best_epoch: int
    seconds: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA device is available")
    return device


def prepare_run_dir(out: str | Path) -> Path:
    """Refuse to reuse a run directory: a finished run is never overwritten."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output '{out}' already exists and is not an empty directory; choose a new --out")
    return out


def model_spec(cfg: TrainConfig, data: DataSplits) -> ModelSpec:
    return ModelSpec(cfg.model, data.num_classes, data.in_channels, data.image_size, data.mean, data.std,
                     cfg.time_steps, cfg.tau, cfg.encoder)


def stack(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` samples of a dataset as two tensors."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack(xs), torch.as_tensor([int(v) for v in ys])


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset, batch_size: int, device: torch.device) -> float:
    correct = total = 0
    with eval_mode(model):
        for x, y in DataLoader(dataset, batch_size=batch_size):
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
    return correct / max(total, 1)


def input_gradient_stats(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean l1 norm and fraction of exact zeros of d f / d x (f: METHOD.md's true-class probability),
    under the training estimator, in eval mode."""
    with eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = true_class_probability(model(x), y)
        (g,) = torch.autograd.grad(f.sum(), x)
    return {"grad_l1": g.flatten(1).abs().sum(1).mean().item(), "grad_zero_fraction": (g == 0).float().mean().item()}


def train(cfg: TrainConfig, out: str | Path, progress: bool = True, data: DataSplits | None = None) -> TrainResult:
    """Train one model as ``cfg`` says into the new run directory ``out``. The global RNG is seeded with
    ``cfg.seed`` inside a fork, so the caller's random state is the same afterwards."""
    cfg = cfg.resolved()
    run_dir = prepare_run_dir(out)
    device = pick_device(cfg.device)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.val_fraction, cfg.seed, cfg.augment)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        return _fit(cfg, run_dir, device, data, progress)


def _fit(cfg: TrainConfig, run_dir: Path, device: torch.device, data: DataSplits, progress: bool) -> TrainResult:
    spec = model_spec(cfg, data)
    model = create_model(spec).to(device)
    defense = create_defense(cfg.defense, lamb=cfg.lamb, h=cfg.h, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                             attack=cfg.attack, beta=cfg.beta, seed=cfg.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True,
                        drop_last=len(data.train) > cfg.batch_size,
                        generator=torch.Generator().manual_seed(cfg.seed))
    stats_x, stats_y = (t.to(device) for t in stack(data.val, cfg.grad_stats_batch))

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    base = {"arch": spec.to_dict(), "dataset": cfg.dataset, "config": cfg.to_dict()}
    best_acc, best_epoch, best_state = -1.0, -1, None
    start = time.perf_counter()
    with open(run_dir / "metrics.jsonl", "w") as log:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            sums: dict[str, torch.Tensor] = {}  # summed on the device: no host sync per step for logging
            # disable=None: bars on a terminal only, so logs stay readable
            batches = tqdm(loader, desc=f"{cfg.defense} epoch {epoch}/{cfg.epochs}", leave=False,
                           disable=None if progress else True)
            for x, y in batches:
                x, y = x.to(device), y.to(device)
                loss, parts = defense.loss(model, x, y)
                # One host sync per step. Spikes turn NaN inputs into silence (NaN >= thr is false), so
                # the input is checked as well as the loss.
                if not bool(torch.isfinite(loss) & torch.isfinite(x).all()):
                    what = "the input batch holds NaN or inf" if not torch.isfinite(x).all() else f"loss is {loss.item()}"
                    raise UserError(f"training diverged at epoch {epoch}: {what}; lower --lr or --lamb, raise --h, "
                                    "or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                defense.after_step(model)
                for key, value in {"loss": loss.detach(), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            val_acc = accuracy(model, data.val, 256, device)
            record = {"epoch": epoch, "lr": lr,
                      **{k: float(v) / max(len(loader), 1) for k, v in sums.items()},
                      "val_accuracy": val_acc, **input_gradient_stats(model, stats_x, stats_y),
                      "seconds": time.perf_counter() - start}
            record.setdefault("penalty", 0.0)
            log.write(json.dumps(record) + "\n")
            log.flush()
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "val_accuracy": val_acc}
            save_checkpoint(run_dir / "last.pt", {**base, **state})
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                save_checkpoint(run_dir / "best.pt", {**base, **state})
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(run_dir, model, best_acc, best_epoch, time.perf_counter() - start)
