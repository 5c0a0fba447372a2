"""The Python API in the conventions users know from RobustBench and AutoAttack:

    result = spikeguard.evaluate(model, (x, y), suite="quick", eps=8/255, n=1000)
    model = spikeguard.load("runs/c10_sr")          # model.facts: eps, dataset, defense, estimator, ...
    result = spikeguard.evaluate(model)               # the checkpoint's data set and eps

``evaluate`` takes any ``nn.Module`` mapping images in [0, 1] to logits (spikeguard, SpikingJelly or
snnTorch; library neuron state is reset before every forward pass) and data as a tensor or NumPy pair, a
DataLoader or a data set's name; it runs exactly what ``spikeguard evaluate`` runs (``run_evaluation``).
The caller's model comes back on its device, in its train/eval mode and with its neuron state as found.

The file reads: the Result, evaluate (its door: the checks of the caller's arguments, each one line naming
the argument; then the run), load.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.schema import EvalRecord, Headline, SampleOutcome, read_results


@dataclass
class Result:
    """What ``spikeguard.evaluate`` found. Accuracies are fractions in [0, 1]."""

    clean_accuracy: float
    robust_accuracy: float                      # per-sample worst case over every (attack, estimator) pair
    accuracies: dict[str, float]                # per attack (its label), each the worst case over its estimators
    flags: list                                 # the sanity flags raised (empty: none)
    per_sample: list[dict]                      # one row per sample: clean_correct, robust, broken_by, ...
    results: dict                               # results.json's content
    adversarial: torch.Tensor | None = field(default=None, repr=False)  # return_adversarial: the scored ones
    record: EvalRecord | None = field(default=None, repr=False)         # the same results, typed

    @property
    def headline(self) -> Headline | None:
        """The number to quote: ``accuracy``, ``is_bound`` (False when a check found a gradient it could not
        trust) and ``why``; None only for results of a format that had no headline."""
        return (self.record or read_results(self.results)).headline

    @property
    def is_bound(self) -> bool:
        """Whether the headline is an upper bound on robust accuracy as far as the checks can tell (False without
        a headline)."""
        return self.headline is not None and self.headline.is_bound

    def save(self, path: str | Path) -> Path:
        """results.json at ``path`` and the per-sample CSV beside it; returns the CSV's path."""
        from spikeguard.evaluation.evaluate import write_results

        samples = [SampleOutcome.from_row(row) for row in self.per_sample]
        return write_results(Path(path), read_results(self.results), samples)

    def __repr__(self) -> str:
        found = self.headline
        quoted = "no headline" if found is None else f"headline={found.accuracy:.4f} ({found.label})"
        return (f"Result(clean={self.clean_accuracy:.4f}, robust={self.robust_accuracy:.4f}, {quoted}, "
                f"n={len(self.per_sample)}, flags={len(self.flags)})")


# ------------------------------------------------------------------------------------------- evaluate

def evaluate(model: nn.Module, data: Any = None, suite: str = "quick", eps: float | str | None = None,
             n: int | None = None, return_adversarial: bool = False, *, num_classes: int | None = None,
             batch_size: int = 256, seed: int = 0, device: str = "auto", threat_model: str | None = None,
             eot_draws: int | None = None, source: Any = None, data_dir: str | None = None, download: bool = False,
             progress: bool | None = None, batch_dependent: bool = False) -> Result:
    """Attack ``model`` on ``data`` with ``suite`` at radius ``eps``; the first ``n`` samples (all: None).

    ``data`` and ``eps`` default to a loaded checkpoint's (``model.facts``, see ``load``). ``threat_model``,
    ``eot_draws`` and ``source`` (a transfer source: checkpoint, ``package.module:function`` or module) are
    ``spikeguard evaluate``'s options; so is ``batch_dependent`` (True: a model whose outputs depend on the
    other samples in its batch is evaluated and flagged, not refused). ``device``: ``auto`` (CUDA when there is one), ``cpu``, ``cuda:N``.
    ``progress``: news on stderr (None: when stderr is a terminal). ``return_adversarial``: ``Result.adversarial``
    holds, per sample, the example the evaluation counted (the lowest-scored input any attack reached;
    the clean input where none lowered it)."""
    try:
        facts = getattr(model, "facts", None) or {}
        if data is None and "dataset" not in facts:
            raise UserError("give data: a tensor or NumPy pair (images, labels), a DataLoader or a data set's name")
        eps = facts.get("eps") if eps is None else eps
        pairs, known_classes, name, train = _as_pairs(facts if data is None else data, n, data_dir, download)
        return _evaluate(model, pairs, num_classes or known_classes, name, return_adversarial,
                         dict(suite=suite, eps=eps, n=n, batch_size=batch_size, seed=seed, device=device,
                              threat_model=threat_model, eot_draws=eot_draws, source=source,
                              progress=sys.stderr.isatty() if progress is None else progress,
                              batch_dependent=batch_dependent), train)
    except UserError as error:  # the messages shared with the command line name its flags: name arguments
        raise UserError(_python_words(str(error))) from None


_SWITCHES = ("download", "batch_dependent")  # flags that switch something on: download=True


def _python_words(message: str) -> str:
    """``--data-dir`` -> ``data_dir``, ``--download`` -> ``download=True``: the evaluation's messages (shared
    with the command line) in the words of this function's arguments."""
    def word(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return f"{name}=True" if name in _SWITCHES else name

    return re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)", word, message)


def _as_pairs(data: Any, n: int | None, data_dir, download) -> tuple[list, int | None, str, Any]:
    """(a sequence of (image, label), the number of classes when known, the data set's name, its training
    split when known: the escalation trains its substitute there); a DataLoader or other iterable is read
    only as far as ``n`` samples."""
    if isinstance(data, dict):  # a loaded checkpoint's facts: its own split of its data set
        from spikeguard.rundir import load_splits

        splits = load_splits({"dataset": data["dataset"], "config": data.get("config", {})}, data_dir, download)
        return splits.test, splits.num_classes, data["dataset"], splits.train
    if isinstance(data, str):
        from spikeguard.data import load_dataset

        splits = load_dataset(data, data_dir, download, augment=False)
        return splits.test, splits.num_classes, data, splits.train
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(t) for t in data):
        x, y = (torch.as_tensor(t) for t in data)
        if len(x) != len(y):
            raise UserError(f"data: images and labels differ in length ({len(x)} vs {len(y)})")
        x = x[:n] if n is not None else x
        _check_range(x)
        return list(zip(x.float() if not x.is_floating_point() else x, y.long())), None, "custom", None
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):  # a data set or a list of (image, label)
        count = len(data) if n is None else min(n, len(data))
        pairs = [(torch.as_tensor(data[i][0]), torch.as_tensor(data[i][1]).long()) for i in range(count)]
        if pairs:
            _check_range(torch.stack([p[0] for p in pairs]))
        return pairs, None, "custom", None
    if hasattr(data, "__iter__"):
        pairs = []
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise UserError("data: a DataLoader must yield (images, labels) batches")
            pairs += list(zip(torch.as_tensor(batch[0]), torch.as_tensor(batch[1]).long()))
            if n is not None and len(pairs) >= n:
                break
        pairs = pairs[:n] if n is not None else pairs
        if pairs:
            _check_range(torch.stack([p[0] for p in pairs]))
        return pairs, None, "custom", None
    raise UserError("data must be a tensor or NumPy pair (images, labels), a DataLoader, a data set of (image, "
                    "label) or a data set's name")


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or type(value).__module__ == "numpy" and hasattr(value, "shape")


def _check_range(x: torch.Tensor) -> None:
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise UserError(f"data: images must lie in [0, 1] (found values in [{low:.4g}, {high:.4g}]); pass them "
                        "before normalisation, which belongs inside the model")


def _evaluate(model: nn.Module, pairs: list, num_classes: int | None, name: str, return_adversarial: bool,
              settings: dict, train: Any = None) -> Result:
    from spikeguard.adapters import preserved_state

    if not pairs:
        raise UserError("data: no samples")
    modes = [(m, m.training) for m in model.modules()]
    home = next((t.device for t in (*model.parameters(), *model.buffers())), None)
    try:
        with preserved_state(model):  # SpikingJelly / snnTorch state: reset before every pass, as found after
            return _run(model, pairs, num_classes, name, return_adversarial, settings, train)
    finally:
        for module, training in modes:  # train/eval mode as found
            module.training = training
        if home is not None:
            model.to(home)  # the device as found


def _run(model, pairs, num_classes, name, return_adversarial, settings, train=None) -> Result:
    from spikeguard.evaluation import EvalConfig, Target, run_evaluation
    from spikeguard.evaluation.examples import ScoredExamples
    from spikeguard.external import wrap_external
    from spikeguard.runtime import pick_device

    device = pick_device(settings["device"])
    target = wrap_external(model).eval().to(device)
    first = torch.stack([pairs[i][0] for i in range(min(2, len(pairs)))])
    probe = _probe(target, first, device)  # after the move: the classes the model gives where it runs
    num_classes = num_classes or int(probe.shape[1])
    config = EvalConfig(**{**settings, "device": str(device)})
    examples = ScoredExamples() if return_adversarial else None
    evaluation = run_evaluation(config, Target.of(target, pairs, num_classes, dataset=name, train=train),
                                examples=examples)
    record = evaluation.record
    adversarial = None
    if examples is not None:
        adversarial = examples.stacked([sample.index for sample in evaluation.samples])
        _check_counted(examples, evaluation.samples)
    accuracies = {a.name: a.accuracy for a in record.attacks}
    return Result(record.clean_accuracy, record.ensemble_accuracy, accuracies, [f.to_json() for f in record.flags],
                  evaluation.rows, evaluation.results, adversarial, record)


@torch.no_grad()
def _probe(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's output for the first of ``inputs``, which must be logits [1, classes]; for the first two
    when it cannot score one alone (BatchNorm on batch statistics: the evaluation's batch-dependence probe
    then refuses it, or flags it when the dependence is intended)."""
    x = inputs[:1]
    try:
        out = model(x.to(device))
    except (RuntimeError, ValueError) as error:
        if len(inputs) < 2:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(f"model: it fails on one input of shape {tuple(x.shape)} ({first})") from None
        x = inputs[:2]
        out = model(x.to(device))
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model: for {'one input' if len(x) == 1 else 'two inputs'} of shape {tuple(x.shape)} it "
                        f"returned {shape}; expected logits of shape ({len(x)}, classes), i.e. [N, classes] for N "
                        "inputs (for an output per time step [T, N, classes], return its mean or sum over time)")
    return out


def _check_counted(examples, samples: list[SampleOutcome]) -> None:
    """Each kept example's score is its sample's worst case: anything else is a bug in the bookkeeping."""
    for sample in samples:
        kept = examples.score[sample.index]
        if sample.clean_correct > 0 and abs(kept - sample.worst_case) > 1e-6:
            raise RuntimeError(f"the kept example of sample {sample.index} scores {kept}, its worst case is "
                               f"{sample.worst_case}: a bug in spikeguard")


# ------------------------------------------------------------------------------------------- load

def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The model of a run directory or a checkpoint (images in [0, 1] -> logits), in eval mode, with what the
    checkpoint says of it in ``model.facts``: ``dataset``, ``eps`` (the training radius), ``defense``,
    ``estimator`` (the training estimator; None for a model built outside spikeguard), ``model_fn``,
    ``epoch``, ``val_accuracy``, ``checkpoint`` and ``config``. ``evaluate`` uses dataset and eps by default.

    ``model``: a fresh instance of the network to load the weights into (for a run trained from a module
    given as an object, which the checkpoint cannot rebuild); it is returned wrapped so that SpikingJelly /
    snnTorch state is reset before every forward pass."""
    from spikeguard.checkpoint import load_model

    if model is None:
        model, ckpt = load_model(path)
    else:
        model, ckpt = _into(model, path)
    cfg = ckpt.get("config", {}) or {}
    external = ckpt.get("arch") is None
    model.facts = {"dataset": ckpt.get("dataset"), "eps": cfg.get("eps"), "defense": cfg.get("defense"),
                   "estimator": None if external else cfg.get("train_estimator"), "model_fn": ckpt.get("model_fn"),
                   "epoch": ckpt.get("epoch"), "val_accuracy": ckpt.get("val_accuracy"), "checkpoint": str(path),
                   "config": cfg}
    return model.eval()


def _into(model: nn.Module, path: str | Path) -> tuple[nn.Module, dict]:
    from spikeguard.checkpoint import describe_mismatch, read_checkpoint
    from spikeguard.external import wrap_external

    ckpt = read_checkpoint(path)
    model = wrap_external(model) if ckpt.get("arch") is None else model  # trained wrapped: keys under "model."
    mismatch = describe_mismatch(model.state_dict(), ckpt["model"])
    if mismatch:
        raise UserError(f"model: the weights of checkpoint '{path}' do not fit it ({mismatch})")
    model.load_state_dict(ckpt["model"])
    return model, ckpt
