"""Models built outside spikeguard: load them from ``package.module:function`` and make stateful SNNs safe.

SpikingJelly and snnTorch neurons keep their membrane state in the module between calls. An attack calls
the model many times; without a reset, each call starts where the previous one (another input, another
iterate) stopped, and the measured robustness depends on that leaked state. ``wrap_external`` finds such
neurons and returns a model that resets them before every forward pass. Neither library is imported
unless the model uses it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from spikeguard.errors import UserError


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """Let ``module:function`` name a file in the current directory, as ``python -m`` would; remove only
    the entry added here, so path changes made by the imported module survive."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def load_model_fn(spec: str) -> nn.Module:
    """Import ``package.module:function``, call the function with no arguments and return its
    ``nn.Module`` in eval mode. The model must map images in [0, 1] to logits."""
    module_name, colon, attr_path = str(spec).partition(":")
    if not colon or not module_name or not attr_path:
        raise UserError(f"model function '{spec}' must look like package.module:function")
    with _cwd_on_path():
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001 - any failure in user code is the user's to fix: one line
            raise UserError(f"cannot import module '{module_name}' ({_first_line(error)})") from None
        target = module
        for attr in attr_path.split("."):
            if not hasattr(target, attr):
                raise UserError(f"module '{module_name}' has no attribute '{attr_path}'")
            target = getattr(target, attr)
        if not callable(target):
            raise UserError(f"'{spec}' is not callable (type {type(target).__name__})")
        try:
            model = target()
        except Exception as error:  # noqa: BLE001 - same: the user's code, one line
            raise UserError(f"calling '{spec}()' failed ({_first_line(error)})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"'{spec}()' returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


class StatefulSNNAdapter(nn.Module):
    """Calls ``reset(model)`` before every forward pass of ``model``, so each pass starts from a clean
    neuron state. Parameters, buffers, train/eval mode and ``state_dict`` keys (under ``model.``) are the
    wrapped model's."""

    def __init__(self, model: nn.Module, reset: Callable[[nn.Module], None]):
        super().__init__()
        self.model = model
        self._reset_fn = reset  # not named ``reset``: SpikingJelly's reset_net calls every module's reset()

    def forward(self, *args, **kwargs):
        # Reset before, not after: resetting after the pass could change state tensors in place that the
        # pending backward pass still needs.
        self._reset_fn(self.model)
        return self.model(*args, **kwargs)


def _from(module: nn.Module, framework: str) -> bool:
    """Whether the module's class or one of its bases comes from the package ``framework`` (a user's
    subclass of a library neuron counts)."""
    return any(cls.__module__.partition(".")[0] == framework for cls in type(module).__mro__)


def _snntorch_neurons_without_reset(model: nn.Module) -> list[str]:
    # snnTorch neurons carry ``init_hidden``; one without reset_mem() comes from a release whose state
    # this adapter cannot clear.
    return sorted({type(m).__name__ for m in model.modules()
                   if _from(m, "snntorch") and hasattr(m, "init_hidden")
                   and not callable(getattr(m, "reset_mem", None))})


def wrap_external(model: nn.Module) -> nn.Module:
    """Wrap a SpikingJelly or snnTorch model (detected from its modules' classes) in a
    StatefulSNNAdapter that resets all its neurons before every forward pass, each library's way
    (spikeguard.adapters.reset_state); return any other model unchanged (spikeguard's own neurons hold no
    state between calls)."""
    from spikeguard.adapters import reset_state

    if isinstance(model, StatefulSNNAdapter):
        return model
    modules = list(model.modules())
    jelly = any(_from(m, "spikingjelly") and callable(getattr(m, "reset", None)) for m in modules)
    torch_neurons = any(_from(m, "snntorch") for m in modules)
    if torch_neurons:
        stuck = _snntorch_neurons_without_reset(model)
        if stuck:
            raise UserError(f"snnTorch neurons {', '.join(stuck)} have no reset_mem(); install snntorch>=0.9")
    return StatefulSNNAdapter(model, reset_state) if jelly or torch_neurons else model


def load_external(spec: str) -> nn.Module:
    """``load_model_fn`` then ``wrap_external``: an external model ready to attack."""
    return wrap_external(load_model_fn(spec))


def source_sha256(spec: str) -> str | None:
    """sha256 of the source file of ``package.module:function``'s module (None when it has no file):
    which code built a trained model, recorded beside its weights."""
    import hashlib

    module = sys.modules.get(str(spec).partition(":")[0])
    path = getattr(module, "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def external_model(spec: str | None, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """A model built outside spikeguard, ready to train (library neurons reset before every pass), and what
    its checkpoints record of it: ``model_fn`` and the sha256 of its module's source when built from
    ``spec`` (``package.module:function``), else the class of the ``model`` given as an object."""
    if model is None:
        if spec is None:
            raise UserError("give a model or a model function (package.module:function)")
        model = load_model_fn(spec).train()
        return wrap_external(model), {"model_fn": spec, "model_fn_sha256": source_sha256(spec)}
    cls = type(model)
    return wrap_external(model), {"model_fn": spec, "model_class": f"{cls.__module__}.{cls.__qualname__}"}


def rebuild(ckpt: dict, where: str) -> nn.Module:
    """The (untrained) model a checkpoint of an external model records, from its model function; one line
    naming the module when it cannot be imported, and a warning when its source changed since training."""
    spec = ckpt.get("model_fn")
    if not spec:
        raise UserError(f"checkpoint '{where}' holds a {ckpt.get('model_class', 'model')} given as an object, "
                        "not a model function: build it yourself and load_state_dict(checkpoint['model'])")
    try:
        model = load_model_fn(spec)
    except UserError as error:
        module = spec.partition(":")[0]
        raise UserError(f"checkpoint '{where}' was trained from model function '{spec}': {error} (put module "
                        f"'{module}' on the Python path, e.g. run from its directory)") from None
    recorded, now = ckpt.get("model_fn_sha256"), source_sha256(spec)
    if recorded and now and recorded != now:
        import logging

        logging.getLogger(__name__).warning("the source of module '%s' changed since checkpoint '%s' was trained",
                                            spec.partition(":")[0], where)
    return wrap_external(model)
