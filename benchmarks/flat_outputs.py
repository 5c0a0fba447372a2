"""The flat-outputs probe's fraction on honest digits models and on flat-output traps, to set its threshold
(spikeguard/evaluation/flat_outputs.py, THRESHOLD).

Honest: the tiny SNN of tests/conftest.py (T = 4, two epochs), the demo's vanilla SNN (spikeguard's own
training, the demo's settings), a ReLU CNN (tests/lying_models.honest_classifier), and the tutorial-style
SpikingJelly and snnTorch CSNNs of tests/ecosystem_models.py (three epochs). Traps around the demo's vanilla
SNN: FlatLiar (hard labels), ScaledLogits (x 1e4: softmax saturated to exact 0 and 1, logits still move)
and the softmax rounded to quarters (quantised scores). The probe runs on the first ``--n`` test samples in
batches of its own size (64), at eps 0.15.

    python benchmarks/flat_outputs.py --n 200 --out benchmarks/results/cpu_flat_outputs.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.common import emit, environment  # noqa: E402
from spikeguard.data import load_dataset, stack  # noqa: E402
from spikeguard.evaluation.flat_outputs import PROBE_SAMPLES, probe_flat_outputs  # noqa: E402

EPS = 0.15


class Rounded(nn.Module):
    """Quantised scores: the base's softmax rounded to quarters (tests/test_decision_attack.py's wrapper)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return torch.round(torch.softmax(self.base(x), 1) * 4) / 4


def honest_models(train_x, train_y) -> dict[str, nn.Module]:
    import ecosystem_models
    from conftest import tiny_spec
    from lying_models import honest_classifier

    from spikeguard.config import TrainConfig
    from spikeguard.demo import demo_config, demo_selection
    from spikeguard.external import wrap_external
    from spikeguard.models import create_model
    from spikeguard.training import train

    torch.manual_seed(0)
    tiny = create_model(tiny_spec())
    opt = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9)
    tiny.train()
    for _ in range(2):  # as tests/conftest.py's _trained_tiny
        for i in range(0, len(train_y), 64):
            loss = nn.functional.cross_entropy(tiny(train_x[i:i + 64]), train_y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    cfg: TrainConfig = demo_config("vanilla", demo_selection()["chosen"], 0)
    with tempfile.TemporaryDirectory() as run_dir:
        vanilla = train(cfg, Path(run_dir) / "vanilla", progress=False).model.eval()
    return {"tiny_test_snn": tiny.eval(), "vanilla_digits_snn": vanilla,
            "relu_cnn": honest_classifier(train_x, train_y),
            # wrapped as every spikeguard entry point wraps them: neuron state reset before each forward pass
            "spikingjelly_csnn": wrap_external(ecosystem_models.train(ecosystem_models.JellyCSNN(), train_x, train_y)),
            "snntorch_csnn": wrap_external(ecosystem_models.train(ecosystem_models.TorchCSNN(), train_x, train_y))}


def probe(model: nn.Module, x: torch.Tensor) -> dict:
    """The probe on every sample of ``x``, batch by batch, its fractions weighted by batch size."""
    reports, start = [], time.perf_counter()
    for i in range(0, len(x), PROBE_SAMPLES):
        reports.append(probe_flat_outputs(model, x[i:i + PROBE_SAMPLES], EPS, seed=i))
    n = sum(r["samples"] for r in reports)

    def weighted(key: str) -> float:
        return sum(r[key] * r["samples"] for r in reports) / n

    return {"samples": n, "flat_fraction": weighted("flat_fraction"),
            "flat_fraction_eps_over_2": sum(list(r["flat_fraction_per_radius"].values())[0] * r["samples"]
                                            for r in reports) / n,
            "saturated_softmax_fraction": weighted("saturated_softmax_fraction"),
            "constant_output_batches": sum(r["constant_outputs"] for r in reports),
            "quantised_batches": sum(r["quantised"] for r in reports), "batches": len(reports),
            "radii": reports[0]["radii"], "draws": reports[0]["draws"],
            "seconds": round(time.perf_counter() - start, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    (train_x, train_y), (test_x, _) = stack(data.train), stack(data.test)
    x = test_x[:args.n]
    import traps

    models = honest_models(train_x, train_y)
    vanilla = models["vanilla_digits_snn"]
    trap_models = {"flat_liar": traps.FlatLiar(vanilla), "scaled_logits_1e4": traps.ScaledLogits(vanilla),
                   "softmax_in_quarters": Rounded(vanilla)}
    result = {"benchmark": "flat_outputs", "eps": EPS, "environment": environment(torch.device("cpu")),
              "honest": {name: probe(m, x) for name, m in models.items()},
              "traps": {name: probe(m, x) for name, m in trap_models.items()}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
