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
from spikeguard.snn.estimators import Estimator, parse_estimator, rate_slope, spike


class _RateGradient(torch.autograd.Function):
    """Spikes forward; rate-based gradient backward (BPTR / RGA).

    The layer is seen as rate = phi(mean_t I_t). With the network output averaged over time, the
    gradient reaching each step's input is dL/dI_t = phi'(m) * mean_t' dL/ds_t', which makes the whole
    spiking network differentiate like the rate network it approximates.
    """

    @staticmethod
    def forward(ctx, currents: torch.Tensor, spikes: torch.Tensor, tau: float, threshold: float):
        ctx.save_for_backward(rate_slope(currents.mean(0), tau, threshold))
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (slope,) = ctx.saved_tensors
        grad_currents = (slope * grad_spikes.mean(0)).expand_as(grad_spikes)
        return grad_currents, None, None, None


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
        self.estimator = parse_estimator(estimator)
        self.time_steps = int(time_steps)
        self.detach_reset = detach_reset
        self.spiking = True

    def extra_repr(self) -> str:
        mode = f"estimator={self.estimator.name}" if self.spiking else "ann=True"
        return f"tau={self.tau}, threshold={self.threshold}, T={self.time_steps}, {mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spiking:
            return torch.relu(x)
        T = self.time_steps
        currents = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        if self.estimator.is_rate:
            with torch.no_grad():
                spikes = self._integrate(currents, Estimator("straight_through"))
            spikes = _RateGradient.apply(currents, spikes, self.tau, self.threshold)
        else:
            spikes = self._integrate(currents, self.estimator)
        return spikes.reshape(x.shape)

    def _integrate(self, currents: torch.Tensor, estimator: Estimator) -> torch.Tensor:
        u = torch.zeros_like(currents[0])
        out = []
        for current in currents:
            u = self.tau * u + current if self.tau != 1.0 else u + current
            s = spike(u - self.threshold, estimator)
            reset = s.detach() if self.detach_reset else s
            u = u * (1 - reset)
            out.append(s)
        return torch.stack(out)
