"""Multi-step integrate-and-fire neuron whose backward pass is a setting.

Time is folded into the batch dimension inside a model: a tensor of shape [T * N, ...] holds time step t
of sample n at row t * N + n (time-major). This is the one place that convention is unfolded.

The membrane state lives only inside ``forward``: every call starts from u = 0, so no state can leak from
one forward pass (or one attack iteration) to the next.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.snn.estimators import spike
from spikeguard.snn.registry import Estimator, parse_estimator


class IFNeuron(nn.Module):
    """Integrate-and-fire neuron with optional leak and hard reset.

    u_t = tau * u_{t-1} + I_t;  s_t = H(u_t - threshold);  u_t <- u_t * (1 - s_t).
    ``time_steps`` is set by the model that owns the neuron. With ``spiking = False`` the neuron is a
    ReLU: the ANN twin of the network (same weights, ReLU where the spikes were).
    """

    def __init__(self, tau: float = 1.0, threshold: float = 1.0, estimator: str | Estimator = "triangle:1.0",
                 time_steps: int = 8, detach_reset: bool = False):
        super().__init__()
        if not 0.0 < tau <= 1.0:
            raise UserError(f"tau must lie in (0, 1], got {tau}")
        if threshold <= 0:
            raise UserError(f"threshold must be positive, got {threshold}")
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.estimator = estimator
        self.time_steps = int(time_steps)
        self.detach_reset = detach_reset
        self.spiking = True

    @property
    def estimator(self) -> Estimator:
        """The backward estimator; its ``fire`` makes this layer's spikes."""
        return self._estimator

    @estimator.setter
    def estimator(self, spec: str | Estimator) -> None:
        est = parse_estimator(spec)
        _ = est.rule  # loaded now, not inside a forward pass that torch.compile traces
        self._estimator = est

    def extra_repr(self) -> str:
        mode = f"estimator={self.estimator.name}" if self.spiking else "ann=True"
        return f"tau={self.tau}, threshold={self.threshold}, T={self.time_steps}, {mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spiking:
            return torch.relu(x)
        T = self.time_steps
        currents = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        spikes = self.estimator.fire(self, currents)
        return spikes.reshape(x.shape)

    def integrate(self, currents: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None,
                  record: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The membrane loop: spikes [T, N, ...] (each through ``spike(u - threshold, estimator, sigma)``)
        and, with ``record``, the membrane u_t of every step before reset. Estimators' ``fire`` calls it."""
        u = torch.zeros_like(currents[0])
        out, membranes = [], []
        for current in currents:
            u = self.tau * u + current if self.tau != 1.0 else u + current
            if record:
                membranes.append(u)
            s = spike(u - self.threshold, estimator, sigma)
            reset = s.detach() if self.detach_reset else s
            u = u * (1 - reset)
            out.append(s)
        return torch.stack(out), torch.stack(membranes) if record else None
