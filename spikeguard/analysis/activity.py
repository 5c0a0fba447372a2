"""Spiking activity per layer, synaptic operations (SOPs) and an energy estimate.

Counting convention (docs/theory.md, "Activity and energy"):
- a spiking layer's SOPs per inference = its spikes (summed over neurons and time steps, per sample) times
  the fan-out of the synaptic layers (Conv/Linear) its spikes reach, through any pooling, flattening or
  normalisation in between;
- fan-out of a Linear: out_features; of a Conv: out_channels / groups * prod(kernel) / prod(stride), the
  usual approximation that ignores the border (a spike near the border reaches fewer outputs);
- synaptic layers fed by no spiking layer (the encoding layer of direct input) do multiply-accumulates
  (MACs) on analogue values at every time step;
- the ANN of the same weights does every layer's MACs once.
Energy = E_AC * SOPs + E_MAC * analogue MACs; ANN energy = E_MAC * all MACs. Memory access, membrane
updates and normalisation are not counted.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.nn.modules.conv import _ConvNd

from spikeguard.runtime import eval_mode
from spikeguard.snn.neuron import IFNeuron

ENERGY_CONSTANTS: dict[str, Any] = {
    "e_ac_joules": 0.9e-12,
    "e_mac_joules": 4.6e-12,
    "source": ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014: 45 nm "
               "CMOS, 32-bit floating point add 0.9 pJ and multiply 3.7 pJ, so one accumulate (AC) 0.9 pJ and "
               "one multiply-accumulate (MAC) 4.6 pJ, as commonly used in SNN energy estimates"),
    "scope": ("synaptic arithmetic only: memory access, membrane updates and normalisation are not counted; "
              "SOP fan-out ignores conv borders (out_channels/groups * kernel area / stride area)"),
}
SYNAPTIC = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fanout(module: nn.Module) -> float:
    """Synapses leaving one input unit of ``module`` (see the module docstring for conv borders)."""
    if isinstance(module, nn.Linear):
        return float(module.out_features)
    assert isinstance(module, _ConvNd), type(module)  # synaptic layers are Linear or convolutions
    return module.out_channels / module.groups * math.prod(module.kernel_size) / math.prod(module.stride)


def fan_in(module: nn.Module) -> int:
    """Inputs (and so MACs) per output unit."""
    if isinstance(module, nn.Linear):
        return module.in_features
    assert isinstance(module, _ConvNd), type(module)
    return module.in_channels // module.groups * math.prod(module.kernel_size)


class _LeafTracer(torch.fx.Tracer):
    """Keeps neurons and encoders whole: their Python loops need no tracing, only their place in the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (IFNeuron, *SYNAPTIC)) or super().is_leaf_module(m, qualname)


def synaptic_consumers(model: nn.Module) -> tuple[dict[str, list[str]], str]:
    """({spiking layer name: [names of the synaptic layers its spikes reach]}, method).

    Traces the model's graph (its ``body`` when it has one: SpikingNet's time folding does not trace) and
    follows each spiking layer's output through non-synaptic operations. If tracing fails (an external
    model), falls back to "the next synaptic layer in registration order"."""
    body = getattr(model, "body", None)
    root, prefix = (body, "body.") if isinstance(body, nn.Module) else (model, "")
    modules = dict(root.named_modules())
    try:
        graph = _LeafTracer().trace(root)
    except Exception:  # noqa: BLE001 - fx raises many types on untraceable Python; all mean "use the fallback"
        return _consumers_by_order(model), "module order"
    consumers: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], IFNeuron):
            continue
        found, seen, queue = [], set(), deque(node.users)
        while queue:
            user = queue.popleft()
            if user in seen:
                continue
            seen.add(user)
            target = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(target, SYNAPTIC):
                found.append(prefix + user.target)
            elif not isinstance(target, IFNeuron):
                queue.extend(user.users)
        consumers[prefix + node.target] = sorted(set(found))
    return consumers, "traced graph"


def _consumers_by_order(model: nn.Module) -> dict[str, list[str]]:
    consumers: dict[str, list[str]] = {}
    pending: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, IFNeuron):
            pending.append(name)
            consumers[name] = []
        elif isinstance(m, SYNAPTIC) and pending:
            for neuron in pending:
                consumers[neuron] = [name]
            pending = []
    return consumers


@torch.no_grad()
def measure_activity(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                     constants: dict | None = None) -> dict:
    """Firing rates, silent neurons, SOPs, MACs and energy per inference, averaged over the samples x.

    A neuron is one entry of a spiking layer's feature map; it is silent if it never spikes on any sample
    at any time step. Firing rate = spikes / (neurons * time steps), averaged over samples."""
    constants = constants or ENERGY_CONSTANTS
    named = dict(model.named_modules())
    # ReLU-mode neurons (an ANN twin) emit analogue values, not spikes: what they feed does MACs
    neurons = {name: m for name, m in named.items() if isinstance(m, IFNeuron) and m.spiking}
    synapses = {name: m for name, m in named.items() if isinstance(m, SYNAPTIC)}
    consumers, method = synaptic_consumers(model)
    consumers = {name: reached for name, reached in consumers.items() if name in neurons}
    spikes = {name: 0.0 for name in neurons}
    fired: dict[str, torch.Tensor] = {}
    steps = {name: 1 for name in neurons}
    macs_per_row = {name: 0.0 for name in synapses}
    rows = {name: 0.0 for name in synapses}
    batch_n = [0]

    def on_spikes(name):
        def hook(module, inputs, out):
            T = module.time_steps
            steps[name] = T
            spikes[name] += out.sum().item()
            active = out.reshape(T * batch_n[0], -1).amax(0) > 0
            fired[name] = active if name not in fired else fired[name] | active
        return hook

    def on_synapse(name):
        def hook(module, inputs, out):
            macs_per_row[name] = out[0].numel() * fan_in(module)
            rows[name] += out.shape[0] / batch_n[0]  # time steps per sample (1 outside the time fold)
        return hook

    handles = [m.register_forward_hook(on_spikes(n)) for n, m in neurons.items()]
    handles += [m.register_forward_hook(on_synapse(n)) for n, m in synapses.items()]
    calls = 0
    try:
        with eval_mode(model):
            for start in range(0, x.shape[0], batch_size):
                batch_n[0] = x[start:start + batch_size].shape[0]
                model(x[start:start + batch_size])
                calls += 1
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    fed_by_spikes = {c for cs in consumers.values() for c in cs}
    layers: list[dict[str, Any]] = []
    for name in neurons:
        size = fired[name].numel() if name in fired else 0
        per_inference = spikes[name] / n
        out_fanout = sum(fanout(synapses[c]) for c in consumers.get(name, []))
        layers.append({
            "name": name, "neurons": size, "time_steps": steps[name],
            "firing_rate": per_inference / (size * steps[name]) if size else 0.0,
            "silent_fraction": 1 - fired[name].float().mean().item() if size else 1.0,
            "spikes_per_inference": per_inference, "consumers": consumers.get(name, []), "fanout": out_fanout,
            "sops": per_inference * out_fanout,
        })
    sops = sum(layer["sops"] for layer in layers)
    analog = {name: macs_per_row[name] * rows[name] / calls for name in synapses if name not in fed_by_spikes}
    ann_macs = sum(macs_per_row.values())
    e_ac, e_mac = float(constants["e_ac_joules"]), float(constants["e_mac_joules"])
    return {
        "layers": layers, "sops_total": sops, "analog_macs": sum(analog.values()), "analog_layers": sorted(analog),
        "ann_macs": ann_macs, "consumers_from": method,
        "energy_joules": e_ac * sops + e_mac * sum(analog.values()),
        "ann_energy_joules": e_mac * ann_macs,
        "energy_constants": dict(constants),
    }
