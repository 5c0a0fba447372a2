"""Why the decision-based attack is RayS (spikeguard/attacks/decision.py) and not foolbox's HopSkipJump: on
the flat-output trap of tests/traps.py (FlatLiar around the tiny digits SNN of tests/conftest.py, eps 0.15),
the accuracy each leaves, against the trick-aware attack (PGD-100, CE and margin, seven gradient sources).

HopSkipJump (foolbox 3.3.4, constraint "linf", its default start: blended uniform noise) runs behind a
counting model that stops it at the budget and keeps each sample's first misclassified query inside the
ball, so both attacks are scored alike: a sample is broken when a queried point within eps and [0, 1] is
misclassified. foolbox is not a dependency of spikeguard: pip install foolbox==3.3.4 to run this.

    python benchmarks/decision_attack.py --out benchmarks/results/cpu_decision_attack.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.common import emit, environment  # noqa: E402
from spikeguard.attacks.decision import rays  # noqa: E402
from spikeguard.data import load_dataset, stack  # noqa: E402

EPS = 0.15


class _Spent(Exception):
    pass


class Counted(nn.Module):
    """The model behind HopSkipJump: counts queries (each a forward pass of every sample), stops at the
    budget, and marks a sample broken at its first misclassified query inside the ball and [0, 1]."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: int):
        super().__init__()
        self.model, self.x, self.y, self.budget, self.used = model, x, y, budget, 0
        self.broken = torch.zeros(len(x), dtype=torch.bool)
        self.training = False

    @torch.no_grad()
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if self.used >= self.budget or bool(self.broken.all()):
            raise _Spent
        self.used += 1
        out = self.model(q)
        inside = ((q - self.x).flatten(1).abs().amax(1) <= EPS) & (q.flatten(1).amin(1) >= 0) & (q.flatten(1).amax(1) <= 1)
        self.broken |= inside & (out.argmax(1) != self.y)
        return out


def hop_skip_jump(model: nn.Module, x: torch.Tensor, y: torch.Tensor, queries: int, gamma: float) -> float:
    import foolbox

    counted = Counted(model, x, y, queries)
    attack = foolbox.attacks.HopSkipJumpAttack(steps=1_000_000, constraint="linf", gamma=gamma)
    torch.manual_seed(0)
    try:
        attack.run(foolbox.PyTorchModel(counted, bounds=(0, 1), device="cpu"), x,
                   foolbox.criteria.Misclassification(y))
    except _Spent:
        pass
    return 1 - counted.broken.float().mean().item()


def timed(run) -> dict:
    start = time.perf_counter()
    accuracy = run()
    return {"accuracy": accuracy, "seconds": round(time.perf_counter() - start, 2)}


def compare(base: nn.Module, liar: nn.Module, x: torch.Tensor, y: torch.Tensor, hop_skip_jump_too: bool) -> dict:
    import traps

    def rays_accuracy(queries: int) -> float:
        x_adv = rays(liar, x, y, EPS, queries=queries, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return (liar(x_adv).argmax(1) == y).float().mean().item()

    runs = {"trick_aware_pgd100": timed(lambda: traps.trick_aware(base, x, y, EPS).float().mean().item())}
    for queries in (1000, 3000, 5000):
        runs[f"rays_{queries}"] = timed(lambda q=queries: rays_accuracy(q))
    if hop_skip_jump_too:  # HopSkipJump is slow: the small set only
        for queries, gamma in ((2000, 1.0), (5000, 1.0), (5000, 1024.0)):
            runs[f"hsj_{queries}_gamma_{gamma:g}"] = timed(lambda q=queries, g=gamma: hop_skip_jump(liar, x, y, q, g))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import traps
    from conftest import tiny_spec

    from spikeguard.models import create_model

    data = load_dataset("digits", seed=0)
    (train_x, train_y), (test_x, test_y) = stack(data.train), stack(data.test)
    torch.manual_seed(0)
    base = create_model(tiny_spec())
    opt = torch.optim.SGD(base.parameters(), lr=0.1, momentum=0.9)
    base.train()
    for _ in range(2):  # as tests/conftest.py's _trained_tiny
        for i in range(0, len(train_y), 64):
            loss = nn.functional.cross_entropy(base(train_x[i:i + 64]), train_y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    base.eval()
    liar = traps.FlatLiar(base)
    out: dict = {"benchmark": "decision_attack", "eps": EPS, "trap": "FlatLiar(tiny digits SNN)",
                 "environment": environment(torch.device("cpu")), "runs": {}}
    for n in (32, 100):
        out["runs"][f"n_{n}"] = compare(base, liar, test_x[:n], test_y[:n], hop_skip_jump_too=n == 32)
    emit(out, args.out)


if __name__ == "__main__":
    main()
