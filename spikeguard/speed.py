"""Speed options for one device: bf16 autocast, channels_last memory layout, torch.compile of the whole
model or of its spiking layers only. tests/test_speed.py bounds what each may change.

* channels_last and compile change no maths; results agree to float rounding (spikes can flip only where
  a membrane sits within rounding of the threshold).
* bf16 runs convolutions and hidden linear layers in bfloat16 (8-bit mantissa), which does change results.
  The first layer and the classifier head run in float32 and every spiking layer integrates its membrane
  in float32, so only the hidden layers' currents are rounded (by up to 0.4 %). On the digits test model
  that kept the loss within 3 % and the parameter gradient's cosine to the float32 one at 0.97 to 0.99
  for vanilla, 0.95 to 0.99 for GR (0.9498 on the test model trained on one thread; the test allows 0.93),
  0.92 for AT (its examples move with the gradient signs). On a randomly initialised VGG-11 (T = 8) the
  cosine was 0.16 to 0.26 for every defense, no lower than adding 1e-3 to every pixel gives in float32
  (1e-5 already gives 0.26: flipped spikes cascade through the deep layers; benchmarks/precision.py).
  Whether bf16 training reaches float32's accuracy is not measured. SR's finite difference is
  not reproduced: with h = 0.01 the input step moves the currents about as much as bf16 rounds them, and
  the penalty was off by up to 90 % per batch, so bf16 is refused for sr and sr_star (their registered
  ``refuses_bf16``, spikeguard/defenses/registry.py).
* TF32 (CUDA convolutions and matmuls with a 10-bit mantissa) is off unless asked for, for the same reason:
  PyTorch's default lets cuDNN convolutions use it.

SpeedOptions and its checks load without PyTorch (the configuration checks them before the heavy import);
the functions that apply the options import it.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from spikeguard.defenses.registry import DEFENSES
from spikeguard.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spikeguard.snn import IFNeuron

COMPILE_CHOICES = ("none", "model", "neurons")


@dataclass(frozen=True)
class SpeedOptions:
    bf16: bool = False
    channels_last: bool = False
    compile: str = "none"            # none | model | neurons (the spiking layers' time loops only)
    tf32: bool = False               # allow TF32 on CUDA (Ampere and newer)

    def check(self, device: torch.device | None = None, defense: str | None = None) -> None:
        """UserError for a choice that cannot run or would change results beyond speed.py's tolerances;
        without ``device`` only the device-independent checks. What a defense refuses is its registered
        facts (spikeguard/defenses/registry.py)."""
        if self.compile not in COMPILE_CHOICES:
            raise UserError(f"unknown compile choice '{self.compile}'; choose from {', '.join(COMPILE_CHOICES)}")
        rules = DEFENSES.get(defense) if defense is not None and defense in DEFENSES else None
        if self.compile != "none" and rules is not None and rules.refuses_compile:
            raise UserError(f"--compile cannot be used with defense '{defense}' ({rules.refuses_compile})")
        if self.bf16 and rules is not None and rules.refuses_bf16:
            raise UserError(f"--bf16 cannot be used with defense '{defense}': {rules.refuses_bf16}")
        if self.bf16 and device is not None and device.type == "cuda":
            import torch

            if not torch.cuda.is_bf16_supported():
                raise UserError("--bf16 needs a GPU with bfloat16 support")


def configure_backends(options: SpeedOptions) -> None:
    """Process-wide float32 precision on CUDA: IEEE float32 unless ``options.tf32``."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = options.tf32
    torch.backends.cudnn.allow_tf32 = options.tf32


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16)


def prepare_model(model: nn.Module, options: SpeedOptions, **compile_kwargs) -> nn.Module:
    """Apply ``options`` to ``model`` in place and return the module to call (the compiled one for
    compile="model"). Parameters, state-dict keys and the model object stay the same, so checkpoints and
    the defenses' weight updates are unaffected; run the forward under :func:`autocast` for bf16.
    ``compile_kwargs`` go to torch.compile (e.g. backend="aot_eager" to trace without code generation)."""
    import torch

    from spikeguard.snn.control import spiking_layers

    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    if options.bf16:
        keep_float32_ends(model)
        for layer in spiking_layers(model):
            layer.register_forward_pre_hook(_float32_currents)
    if options.compile == "neurons":
        compile_neurons(model, **compile_kwargs)
    elif options.compile == "model":
        return cast("nn.Module", torch.compile(model, **compile_kwargs))  # an OptimizedModule for a module
    return model


def to_memory_format(x: torch.Tensor, options: SpeedOptions) -> torch.Tensor:
    """An image batch in the layout the model was prepared for."""
    import torch

    if options.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compile_neurons(model: nn.Module, **compile_kwargs) -> int:
    """torch.compile every spiking layer's forward (its Python loop over time becomes fused kernels);
    returns how many layers were compiled."""
    from spikeguard.snn.control import spiking_layers

    layers = spiking_layers(model)
    for layer in layers:
        layer.compile(**compile_kwargs)
    return len(layers)


def _float32_currents(module: IFNeuron, args: tuple) -> tuple:
    # membrane sums in bf16 would round away small currents near the threshold
    return (args[0].float(), *args[1:])


def keep_float32_ends(model: nn.Module) -> list[nn.Module]:
    """Run the first conv / linear layer and the last linear layer (the classifier head) in float32
    under autocast. Done by a per-instance forward, not a wrapper module, so state-dict keys stay."""
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ends: list[nn.Module] = [layers[0], layers[-1]] if layers else []
    for layer in dict.fromkeys(ends):  # one layer can be both ends
        # per instance, not a wrapper module, so state-dict keys stay
        layer.forward = types.MethodType(_float32_forward(type(layer).forward), layer)
    return ends


def _float32_forward(forward):
    import torch

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return forward(self, x.float())
    return run
