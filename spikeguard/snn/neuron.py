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
from spikeguard.snn.estimators import (
    Estimator,
    membrane_sigma,
    parse_estimator,
    rate_slope,
    spike,
)


class _TimeMeanGradient(torch.autograd.Function):
    """Spikes forward; backward, every step's input current gets the same time-mean gradient
    dL/dI_t = mean_t' slope_t' * dL/ds_t'.

    Two estimators are this rule with different slopes, both written out in docs/estimators.md:
    BPTR / RGA (slope = phi'(mean_t I_t), the same at every step, so dL/dI_t = phi'(m) * mean_t' dL/ds_t':
    the spiking network differentiates like the rate network it approximates) and HART (slope_t = the
    triangle surrogate at step t's membrane, with no gradient through the membrane from step to step).
    """

    @staticmethod
    def forward(ctx, currents: torch.Tensor, spikes: torch.Tensor, slope: torch.Tensor):
        ctx.save_for_backward(slope)
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (slope,) = ctx.saved_tensors
        grad_currents = (slope * grad_spikes).mean(0).expand_as(grad_spikes)
        return grad_currents, None, None


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
        family = self.estimator.family
        if family == "bptr" or family == "hart":
            with torch.no_grad():
                spikes, membranes = self._integrate(currents, self.estimator, record=family == "hart")
                if family == "bptr":
                    slope = rate_slope(currents.mean(0), self.tau, self.threshold)
                else:  # hart: u_t = tau * u_{t-1}.detach() + I_t leaves d s_t / d I_t = sg(u_t - thr)
                    slope = self.estimator.derivative(membranes - self.threshold)
            spikes = _TimeMeanGradient.apply(currents, spikes, slope)
        elif family == "pdsg" and torch.is_grad_enabled() and currents.requires_grad:
            # sigma needs the membrane of every step before the first surrogate is used, so a first pass
            # measures it and a second, identical forward pass carries the gradient.
            with torch.no_grad():
                _, membranes = self._integrate(currents, self.estimator, record=True)
            spikes, _ = self._integrate(currents, self.estimator, sigma=membrane_sigma(membranes))
        else:
            spikes, _ = self._integrate(currents, self.estimator)
        return spikes.reshape(x.shape)

    def _integrate(self, currents: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None,
                   record: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spikes [T, N, ...] and, with ``record``, the membrane u_t of every step before reset."""
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
