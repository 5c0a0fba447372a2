"""A decision-based l-inf attack: RayS (Chen & Gu, "RayS: A Ray Searching Method for Hard-label Adversarial
Attack", KDD 2020), written here from the paper's description. It reads only the model's decision (the
top class), never a score or a gradient.

Why: a model can keep every decision of an honest one and still hide them from the gradient AND from the
score-based black-box attacks by answering with a flat output (hard labels, a softmax saturated to exact
0 and 1, quantised scores): Square and NES then have no score to climb, and the gradient may lie.

Why RayS and not a library's HopSkipJump: foolbox 3.3.4's HopSkipJumpAttack (constraint "linf") was
measured first on the flat-output trap of tests/traps.py (FlatLiar around the tiny digits SNN of the
tests, the first 32 test samples, eps 0.15; benchmarks/decision_attack.py, 2-core Xeon): it left 81%
standing after 2000 queries per sample and 75% after 5000, where the trick-aware attack leaves 3% and RayS
9% (1000 queries), 6% (3000) and 3% (5000). Its boundary-normal estimate probes a radius of about
distance / d, where an SNN's decision is piecewise constant and rarely changes; with its gamma raised a
thousandfold it still left 19% after 5000. RayS searches what an l-inf attacker needs: sign directions
(the corners of the l-inf ball). On the first 100 samples: trick-aware 4%, RayS 5% with 3000 or 5000.

The search. A direction is a sign vector s in {-1, +1}^d; the ray from x along s meets the decision
boundary at radius g(s) = min{r : the model misclassifies clip(x + r s, 0, 1)}, whose l-inf distance from
x is at most r. RayS keeps the best direction found and its radius r*. It flips the signs of one block of
coordinates at a time and asks ONE question per flip: is clip(x + r* s', 0, 1) misclassified? Only when it
is (then g(s') <= r*) does a binary search find the new, smaller radius. The blocks are hierarchical: the
whole vector, then its two halves, four quarters, ... down to single coordinates, then again from the
whole; a whole cycle with no flip taken (no block flip gets closer) starts that sample again from new
random signs. A sample is broken once a misclassified point lies within eps: each binary search first asks at
radius eps, and any point queried inside the ball that is misclassified is kept (never a point outside:
the example returned lies inside the eps ball and [0, 1] by construction; an unbroken sample returns its
clean input).

Query budget (``queries``, per sample; a query is one forward pass of the sample, ``draws`` of them for a
stochastic model): 1 on the clean input, 1 per block flip tried, and per accepted flip 1 at radius eps plus
a binary search down to a precision of eps / 100 (log2(100 (r* - eps) / eps) queries: at most 10 from
r* = 1 at eps 0.15, fewer as r* nears eps). A sample stops as soon as it is broken or its budget is spent.

Randomness: the initial direction is drawn from the caller's generator; a stochastic model (``draws`` > 1)
is queried as the mean of ``draws`` forward passes, drawn from torch's global generator inside
``forked_rng`` seeded from the caller's generator (the caller's random state is untouched, the result
reproducible; the runner scores the returned examples with fresh draws, as for every attack). Inputs of
any shape (images, event frames [N, T, C, H, W]) are searched as flat vectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.runtime import forked_rng

PRECISION = 0.01  # the binary search stops when the radius is known within this fraction of eps


class _Oracle:
    """The model's decisions per sample: counts each sample's queries and keeps its first misclassified
    point inside the eps ball and [0, 1] (``found``, ``best``)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, draws: int):
        self.model, self.x, self.y, self.eps, self.draws = model, x, y, eps, draws
        self.used = torch.zeros(len(x), dtype=torch.long, device=x.device)
        self.found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.best = x.clone()

    @torch.no_grad()
    def wrong(self, idx: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Whether the model misclassifies each query ``q[k]`` (a point for sample ``idx[k]``)."""
        self.used[idx] += 1
        logits = torch.stack([self.model(q) for _ in range(self.draws)]).mean(0)
        wrong = logits.argmax(1) != self.y[idx]
        x = self.x[idx]
        # inside as the runner's guard projects (x - eps <= q <= x + eps, computed the same way): a point kept
        # here is scored exactly as queried
        inside = ((q >= x - self.eps) & (q <= x + self.eps) & (q >= 0) & (q <= 1)).flatten(1).all(1)
        new = wrong & inside & ~self.found[idx]
        self.best[idx[new]] = q[new]
        self.found[idx[new]] = True
        return wrong


def _blocks(d: int) -> Iterator[slice]:
    """One cycle of hierarchical blocks: the whole vector, its halves, quarters, ..., single coordinates."""
    parts = 1
    while True:
        size = math.ceil(d / parts)
        yield from (slice(start, start + size) for start in range(0, d, size))
        if size == 1:
            return
        parts *= 2


class _RaySearch:
    """One batch's search state: per sample the best sign direction and its radius (inf: none found)."""

    def __init__(self, oracle: _Oracle, eps: float, queries: int, generator: torch.Generator | None):
        x = oracle.x
        self.oracle, self.eps, self.queries = oracle, eps, queries
        self.flat = x.flatten(1)
        self.generator = generator
        self.sign = self.random_signs(len(x))
        self.radius = torch.full((len(x),), math.inf, device=x.device)
        self.moved = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # a flip taken in this cycle

    def random_signs(self, n: int) -> torch.Tensor:
        signs = torch.randint(0, 2, (n, self.flat.shape[1]), generator=self.generator)
        return (signs * 2 - 1).to(self.flat.device, self.flat.dtype)

    def point(self, idx: torch.Tensor, sign: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        start = self.flat[idx]
        moved = start + radius[:, None] * sign
        # at radius eps, the ball's faces exactly as the runner's guard computes them
        moved = torch.where(radius[:, None] <= self.eps, torch.min(torch.max(moved, start - self.eps), start + self.eps),
                            moved).clamp(0, 1)
        return moved.reshape(len(idx), *self.oracle.x.shape[1:])

    def live(self) -> torch.Tensor:
        oracle = self.oracle
        return (~oracle.found & (oracle.used < self.queries)).nonzero().squeeze(1)

    def run(self) -> None:
        everyone = torch.arange(len(self.flat), device=self.flat.device)
        self.oracle.wrong(everyone, self.oracle.x)  # a sample misclassified already is broken
        while True:
            self.moved[:] = False
            for block in _blocks(self.flat.shape[1]):
                idx = self.live()
                if idx.numel() == 0:
                    return
                trial = self.sign[idx].clone()
                trial[:, block] *= -1
                self.flip(idx, trial)
            # a whole cycle without a flip taken: no block flip gets closer, so start again elsewhere
            stuck = self.live()
            stuck = stuck[~self.moved[stuck]]
            self.sign[stuck], self.radius[stuck] = self.random_signs(len(stuck)), math.inf

    def flip(self, idx: torch.Tensor, trial: torch.Tensor) -> None:
        """Ask once per sample whether ``trial`` reaches the boundary within the best radius so far (radius 1,
        the farthest a ray needs to go, while none is known); where it does, take it and shrink its radius."""
        reach = self.radius[idx].clamp(max=1.0)
        better = self.oracle.wrong(idx, self.point(idx, trial, reach))
        if bool(better.any()):
            taken = idx[better]
            self.sign[taken], self.radius[taken], self.moved[taken] = trial[better], reach[better], True
            self.shrink(taken)

    def shrink(self, idx: torch.Tensor) -> None:
        """Binary search for the radius along each sample's direction, first asking at eps itself."""
        idx = idx[self.oracle.used[idx] < self.queries]
        at_eps = self.oracle.wrong(idx, self.point(idx, self.sign[idx], torch.full_like(self.radius[idx], self.eps)))
        idx = idx[~at_eps]  # misclassified at eps: broken (the oracle kept the point)
        low = torch.full((len(idx),), self.eps, device=idx.device)
        high = self.radius[idx]
        while True:
            open_ = (high - low > PRECISION * self.eps) & (self.oracle.used[idx] < self.queries)
            if not bool(open_.any()):
                break
            ask, middle = idx[open_], (low[open_] + high[open_]) / 2
            wrong = self.oracle.wrong(ask, self.point(ask, self.sign[ask], middle))
            high[open_] = torch.where(wrong, middle, high[open_])
            low[open_] = torch.where(wrong, low[open_], middle)
        self.radius[idx] = high


def rays(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, queries: int = 2000, draws: int = 1,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Examples inside the l-inf ball of radius ``eps`` and [0, 1]: a misclassified point where RayS found
    one within ``queries`` queries per sample (the module docstring counts them), else the clean input."""
    if queries < 1:
        raise UserError(f"the decision attack needs at least 1 query per sample, got queries: {queries}")
    x = x.detach()
    if eps <= 0 or len(x) == 0:
        return x.clone()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with forked_rng(x.device, seed=seed):  # a stochastic model's draws
        oracle = _Oracle(model, x, y, eps, draws)
        _RaySearch(oracle, eps, queries, generator).run()
    return torch.where(oracle.found.view(-1, *[1] * (x.dim() - 1)), oracle.best, x)


def craft_rays(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return rays(model, x, y, call.eps, queries=call.params["queries"], draws=call.draws, generator=call.generator)
