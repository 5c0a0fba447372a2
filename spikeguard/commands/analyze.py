"""spikeguard analyze: the theory measured on one model."""

from __future__ import annotations

from pathlib import Path

import typer

from spikeguard.commands.options import QUIET_HELP, choices
from spikeguard.errors import UserError
from spikeguard.locks import TAKE_OVER_HELP, claim
from spikeguard.snn.registry import ESTIMATORS

ESTIMATOR_HELP = (f"Backward estimator for the gradient: {choices(ESTIMATORS)}, optionally family:width (default: "
                  "the model's training estimator).")


def analyze(
    checkpoint: Path = typer.Argument(..., help="A run directory (its best.pt) or a checkpoint file."),
    out: Path = typer.Option(..., "--out", help="New directory for analysis.json, per_sample.csv, figures/."),
    eps: list[str] | None = typer.Option(None, "--eps", help="Radius, pixel scale; repeat or comma-separate "
                                            "(default: the training eps)."),
    n: int = typer.Option(100, help="Analyse the first N test samples."),
    estimator: str | None = typer.Option(None, help=ESTIMATOR_HELP),
    draws: int = typer.Option(20, help="Random directions per sample (uniform and signs)."),
    seed: int = typer.Option(0),
    eps_max: float = typer.Option(1.0, "--eps-max", help="Bisection range of the minimal flipping eps, noise."),
    attack_eps_max: float | None = typer.Option(None, "--attack-eps-max", help="... and for the attack "
                                                   "(default: min(eps-max, 4 x the largest eps))."),
    bisect_steps: int = typer.Option(6, "--bisect-steps", help="Bisection steps (tolerance range / 2^steps)."),
    batch_size: int = typer.Option(100, "--batch-size"),
    results: Path | None = typer.Option(None, "--results", help="A results.json of this model to include."),
    data_dir: str | None = typer.Option(None, "--data-dir"),
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
    mech = summary["mechanism"]
    clean = mech["estimators"][mech["training_estimator"]]["clean"]
    flip = mech["flip"]
    agrees = "n/a" if flip["agreement_with_attack"] is None else f"{flip['agreement_with_attack']:.0%}"
    typer.echo(f"medians at clean points: ||df/dx||_1 {clean['f_l1']['median']:.4g}, ||dm/dx||_1 "
               f"{clean['m_l1']['median']:.4g} (m the logit margin), f (1 - f) {clean['f_one_minus_f']['median']:.3g} "
               f"(per sample df/dx = f (1 - f) dm/dx); flip distance m/||dm/dx||_1 "
               f"{_text(flip['flip_distance']['median'])}, "
               f"agrees with the attack at eps {mech['eps']:g} on {agrees} of {flip['samples']} samples")
    if summary["layers"]:
        typer.echo(f"SOPs per inference {summary['sops_total']:.4g}, energy {summary['energy_joules']:.3g} J "
                   f"(ANN of the same weights {summary['ann_energy_joules']:.3g} J)")
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {out / 'analysis.json'}, {out / 'per_sample.csv'} and {len(summary['figures'])} figures")


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
