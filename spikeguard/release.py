"""Import the SR paper authors' published checkpoints (docs/release_checkpoints.md has the facts).

A published file is ``torch.save(model.state_dict())`` of their VGG-11 or WRN-16-4 (T = 8, IF neurons,
tau = 1, threshold 1, hard reset, direct encoding, logits averaged over time). What it lacks is supplied
here: the normalisation constants they published (not stored in the file), and the architecture.

* VGG-11: their convolutions carry a bias followed by BatchNorm. In eval mode BatchNorm computes
  (z + b - mean) / sqrt(var + e) * w + beta, so the bias is folded into the running mean (mean - b):
  exact for evaluation. (Training the imported model would differ: BatchNorm in train mode uses batch
  statistics, where the bias cancels anyway.)
* WRN-16-4: each block mixes its branches with two free weights (``convex.comb``); the import rebuilds
  ``wrn16_4_release``, spikeguard's WRN with that two-weight mix.

The imported checkpoint records that its authors chose the epoch on the test split; every results file
of it says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from spikeguard.errors import UserError

NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
CLASSES = {"cifar10": 10, "cifar100": 100}
MODELS = {"vgg11": "vgg11", "wrn16_4": "wrn16_4_release"}
SELECTION = ("chosen by its authors as the epoch of best accuracy on the test split (no validation split): "
             "its test accuracy is optimistic")


def _ordered(keys, pattern: str) -> list[str]:
    """Module prefixes matching ``pattern`` in the file's order."""
    seen = []
    for key in keys:
        m = re.match(pattern, key)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def _vgg(published: dict, ours: dict) -> dict:
    convs = [p for p in _ordered(published, r"^(layer\d+\.\d+)\.weight$") if published[f"{p}.weight"].dim() == 4]
    bns = [p for p in _ordered(published, r"^(layer\d+\.\d+)\.running_mean$")]
    linears = _ordered(published, r"^(classifier\.\d+)\.weight$")
    our_convs = [k[:-7] for k, v in ours.items() if k.endswith(".weight") and v.dim() == 4]
    our_bns = [k[:-13] for k in ours if k.endswith(".running_mean")]
    our_linears = [k[:-7] for k, v in ours.items() if k.endswith(".weight") and v.dim() == 2]
    if (len(convs), len(bns), len(linears)) != (len(our_convs), len(our_bns), len(our_linears)):
        raise UserError(f"the file has {len(convs)} convolutions, {len(bns)} BatchNorms and {len(linears)} linear "
                        f"layers; VGG-11 has {len(our_convs)}, {len(our_bns)} and {len(our_linears)}")
    out = {}
    for theirs, mine in zip(convs, our_convs):
        out[f"{mine}.weight"] = published[f"{theirs}.weight"]
    for conv, theirs, mine in zip(convs, bns, our_bns):
        for name in ("weight", "bias", "running_var", "num_batches_tracked"):
            out[f"{mine}.{name}"] = published[f"{theirs}.{name}"]
        bias = published.get(f"{conv}.bias")
        mean = published[f"{theirs}.running_mean"]
        out[f"{mine}.running_mean"] = mean - bias if bias is not None else mean  # the conv bias, folded
    for theirs, mine in zip(linears, our_linears):
        out[f"{mine}.weight"], out[f"{mine}.bias"] = published[f"{theirs}.weight"], published[f"{theirs}.bias"]
    return out


def _wrn(published: dict, ours: dict) -> dict:
    blocks = _ordered(published, r"^(block\d+\.\d+)\.")
    our_blocks = _ordered(ours, r"^(body\.\d+)\.bn1\.")
    if len(blocks) != len(our_blocks):
        raise UserError(f"the file has {len(blocks)} residual blocks; WRN-16-4 has {len(our_blocks)}")
    rename = {"conv1.weight": "body.0.weight"}
    for theirs, mine in zip(blocks, our_blocks):
        for key in published:
            if key.startswith(theirs + "."):
                rest = key[len(theirs) + 1:]
                rest = rest.replace("convShortcut.", "shortcut.").replace("convex.comb", "comb")
                rename[key] = f"{mine}.{rest}"
    last_bn = [k[:-13] for k in ours if k.endswith(".running_mean")][-1]
    fc = [k[:-7] for k, v in ours.items() if k.endswith(".weight") and v.dim() == 2][-1]
    for key in published:
        if key.startswith("bn1."):
            rename[key] = f"{last_bn}.{key[4:]}"
        elif key.startswith("fc."):
            rename[key] = f"{fc}.{key[3:]}"
    return {rename[k]: v for k, v in published.items() if k in rename}


def import_release(path: str | Path, model: str, dataset: str, out: str | Path) -> Path:
    """Turn a published ``.pth`` into a spikeguard checkpoint at ``out``; returns ``out``."""
    from spikeguard.checkpoint import describe_mismatch, save_checkpoint
    from spikeguard.models import ModelSpec, create_model
    from spikeguard.provenance import file_sha256

    if model not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)} for --format sr-release, got '{model}'")
    if dataset not in NORMALISATION:
        raise UserError(f"--dataset must be one of {', '.join(NORMALISATION)} for --format sr-release, got '{dataset}'")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' does not exist")
    try:
        published = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a foreign file: one line
        raise UserError(f"'{path}' is not a loadable state dict ({type(e).__name__})") from None
    if not isinstance(published, dict) or not all(isinstance(v, torch.Tensor) for v in published.values()):
        raise UserError(f"'{path}' is not a state dict of tensors (torch.save(model.state_dict()))")
    mean, std = NORMALISATION[dataset]
    spec = ModelSpec(name=MODELS[model], num_classes=CLASSES[dataset], in_channels=3, image_size=32, mean=mean,
                     std=std, time_steps=8, tau=1.0)
    net = create_model(spec)
    ours = net.state_dict()
    try:
        state = _vgg(published, ours) if model == "vgg11" else _wrn(published, ours)
    except KeyError as e:
        raise UserError(f"'{path}' lacks {e} : not a published {model} checkpoint") from None
    state.update({k: v for k, v in ours.items() if k.startswith("encoder.")})  # the published constants
    mismatch = describe_mismatch(ours, state)
    if mismatch:
        raise UserError(f"'{path}' does not fit a published {model} for {dataset} ({mismatch})")
    net.load_state_dict(state)
    config = {"eps": 8 / 255, "dataset": dataset, "model": spec.name, "val_fraction": 0.1, "seed": 0,
              "imported": {"format": "sr-release", "source": str(path), "source_sha256": file_sha256(path),
                           "selection": SELECTION,
                           "vgg_conv_bias": "folded into BatchNorm's running mean (exact in eval mode)"
                           if model == "vgg11" else None}}
    save_checkpoint(out, {"arch": spec.to_dict(), "dataset": dataset, "model": net.state_dict(), "config": config,
                          "epoch": None, "step": None})
    return Path(out)
