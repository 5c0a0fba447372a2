"""spikeguard evaluate: attack a model with a suite, or verify a results file; print the table."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import typer

from spikeguard.commands.options import QUIET_HELP
from spikeguard.errors import UserError
from spikeguard.locks import TAKE_OVER_HELP, Claim, claim


def evaluate(
    invocation: typer.Context,
    checkpoint: Path | None = typer.Argument(None, help="A run directory (its best.pt) or a checkpoint file."),
    suite: str | None = typer.Option(None, "--suite", help="paper | strong | quick, or a suite YAML file."),
    eps: str | None = typer.Option(None, help="l-inf radius in pixel scale, at most 1, e.g. 0.03 or 8/255 "
                                      "(default: the training eps)."),
    n: int | None = typer.Option(None, "--n", "--num-samples", help="Evaluate the first N test samples "
                                    "(default: all). Under torchrun write --num-samples: torchrun reads --n."),
    batch_size: int = typer.Option(256, "--batch-size"),
    seed: int = typer.Option(0),
    source: str | None = typer.Option(None, "--source", help="Transfer source: a checkpoint or "
                                         "package.module:function, trained on the same data set."),
    model_fn: str | None = typer.Option(None, "--model-fn", help="Evaluate the torch.nn.Module that "
                                           "package.module:function returns (images in [0, 1] -> logits)."),
    dataset: str | None = typer.Option(None, help="With --model-fn: its data set. With a checkpoint: refuse "
                                          "it unless trained on this."),
    model: str | None = typer.Option(None, help="Refuse the checkpoint unless it holds this model."),
    eot_draws: int | None = typer.Option(None, "--eot-draws", help="Draws for a stochastic model (default: "
                                            "the suite's; 1 disables EoT and raises a flag)."),
    eps_sweep: bool = typer.Option(False, "--eps-sweep", help="Also sweep eps up to 1 and flag accuracy that "
                                   "does not fall toward chance (events-l0: sweep the budget, K/4 to 8K, and "
                                   "flag accuracy that rises with it)."),
    threat_model: str | None = typer.Option(None, "--threat-model", help="linf (images), frames-linf (event "
                                               "frames; eps relative to the frame range) or events-l0 (add or "
                                               "remove events, --budget per sample; --suite events). Default: "
                                               "linf for images, frames-linf for event data."),
    budget: int | None = typer.Option(None, "--budget", help="events-l0: events added plus removed per "
                                         "sample."),
    batch_dependent: bool = typer.Option(False, "--batch-dependent", help="Evaluate a model whose outputs depend "
                                         "on the other samples in its batch (BatchNorm on batch statistics), "
                                         "which is refused otherwise; results.json flags it."),
    verify: Path | None = typer.Option(None, "--verify", help="Re-run a random tenth of the batches of "
                                          "this results.json and confirm the stored outcomes."),
    verify_all: bool = typer.Option(False, "--all", help="With --verify: re-run every batch (slow, complete)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed evaluation into the same --out with "
                                "the same flags: its finished batches are kept, the rest is run."),
    data_dir: str | None = typer.Option(None, "--data-dir"),
    download: bool = typer.Option(False, "--download/--no-download"),
    out: Path | None = typer.Option(None, "--out", help="results.json to write (a new file; the per-sample "
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
                        progress=progress, batch_dependent=batch_dependent)
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
        assert out is not None, "checked above: evaluate without --verify needs --out"
        held = claim(out, take_over=resume, other_host=take_over_lock,  # one writer per --out
                     check=lambda: _refuse_existing_results(out))
        from spikeguard.commands.interrupts import resumable, this_command
        from spikeguard.evaluation import run_evaluation
        from spikeguard.evaluation.evaluate import fewer_samples_note
        from spikeguard.evaluation.targets import load_target

        config = dataclasses.replace(config, device=str(target_device), progress=progress and ctx.is_main)
        target = load_target(checkpoint, model_fn, dataset, model, data_dir, download)
        if ctx.is_main and checkpoint is not None:
            _warn_if_training(checkpoint, target.epoch)
        if ctx.is_main and (fewer := fewer_samples_note(config.n, len(target.test))) is not None:
            print(f"note: {fewer}", file=sys.stderr)  # now, not only with the table at the end
        with resumable(f"evaluation into {out}", lambda: _kept_batches(out),
                       lambda: "resume with: " + this_command(invocation, add=("--resume",))):
            record = run_evaluation(config, target, keep_batches=out, resume=resume)
        if ctx.is_main:
            csv_path = record.write(out)
            print_evaluation(record.record)
            typer.echo(f"wrote {out} and {csv_path}")
    finally:
        held.release()
        close_distributed()


def _warn_if_training(checkpoint: Path, epoch: int | None) -> None:
    """One line on stderr when the checkpoint's run is still training (its lock is held): what is attacked
    is that checkpoint as it was read now, not the finished run (results.json records the epoch)."""
    from spikeguard.locks import lock_holder

    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    held = lock_holder(run_dir, directory=True)
    if held is None or held[1] == "gone":  # no lock, or one left by a killed process
        return
    holder, standing = held
    who = f"process {holder.get('pid')}" + (f" on {holder.get('host')}" if standing == "unknown" else "")
    print(f"warning: run '{run_dir}' is still training ({who} holds its lock): attacking the checkpoint of epoch "
          f"{epoch if epoch is not None else '(unrecorded)'}, not the finished run", file=sys.stderr)


def _kept_batches(out: Path) -> str:
    """What an interrupted evaluation keeps: its finished batches (spikeguard.evaluation.batch_store)."""
    from spikeguard.evaluation.batch_store import BatchStore

    folder = BatchStore(out, {}).folder
    count = len(list(folder.glob("batch-*.json")))
    return f"{count} finished batch(es) kept in {folder}" if count else "no batch finished, nothing kept"


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


def print_evaluation(record) -> None:
    """The table, headline, flags and notes of an EvalRecord (or of results.json's content)."""
    from spikeguard.results import column_label, headline_text, print_table
    from spikeguard.schema import read_results

    record = read_results(record) if isinstance(record, dict) else record
    row = {"clean": record.clean_accuracy, **{column_label(a): a.accuracy for a in record.all_attacks()},
           "worst case": record.ensemble_accuracy}
    events = record.threat_name == "events-l0"
    radius = f"budget {record.event_budget} events" if events else f"eps {record.eps:.4g}"
    print_table({record.model: row}, title=f"{record.model} on {record.dataset} test (n {record.n}), "
                                          f"{record.threat_name} {radius}, suite {record.suite}")
    typer.echo("alone: the attack ran on every clean-correct sample; cumulative: only on what the earlier attacks "
               "left, so its accuracy is the worst case up to it. Each is the worst case over its estimators.")
    if record.headline:
        typer.echo(headline_text(record.headline))
    for flag in record.flags:
        typer.echo(f"FLAG {flag.name}: {flag.detail}")
    for note in record.notes:
        typer.echo(f"note: {note}")

