"""spikeguard study: a grid of runs, each evaluated and analysed; its status printed."""

from __future__ import annotations

from pathlib import Path

import typer

from spikeguard.commands.options import QUIET_HELP, given
from spikeguard.errors import UserError
from spikeguard.study.executors import EXECUTORS, WAIT_MINUTES

EXECUTOR_HELP = "Where cells run: " + "; ".join(f"{n}: {EXECUTORS.facts(n)['description']}" for n in EXECUTORS) + "."


def study(
    plan: Path = typer.Argument(..., help="A plan YAML (with --out), or a study directory to continue."),
    out: Path | None = typer.Option(None, "--out", help="The study directory (new, or holding this plan)."),
    status: bool = typer.Option(False, "--status", help="Print the cells' status and numbers; run nothing."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    parallel: int = typer.Option(1, "--parallel", min=1, help="Cells at once (local, submitit-local; slurm: the "
                                 "array's limit)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N, for every cell."),
    partition: str | None = typer.Option(None, "--partition", help="Slurm partition (default: the plan's)."),
    gpus_per_cell: int | None = typer.Option(None, "--gpus-per-cell", min=0, help="GPUs per cell; above 1 the "
                                                "cell is one torch.distributed job over them (default: the "
                                                "plan's, else 0 with --device cpu or on a partition without "
                                                "GPUs, else 1)."),
    time_per_cell: int | None = typer.Option(None, "--time-per-cell", min=1, help="Minutes per cell (Slurm "
                                                "time limit; default: the plan's, else 60)."),
    cpus_per_cell: int | None = typer.Option(None, "--cpus-per-cell", min=1, help="CPUs per cell on Slurm "
                                                "(default: the plan's threads)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="slurm: write the sbatch script, submit nothing."),
    wait: bool = typer.Option(False, "--wait", help="slurm: wait for the cells' jobs to end (news of each cell as "
                              "it ends) instead of returning once queued."),
    wait_timeout: float = typer.Option(WAIT_MINUTES, "--wait-timeout", min=0, help="slurm: minutes --wait waits at "
                                       "most (default: a day); the jobs go on after it."),
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
    slurm = given(partition=partition, gpus_per_cell=gpus_per_cell, time_per_cell=time_per_cell,
                       cpus_per_cell=cpus_per_cell)
    from spikeguard.commands.interrupts import command_line, resumable
    from spikeguard.study.run import kept_cells, run_study

    flags = [*(["--executor", executor] if executor != "local" else []),
             *(["--parallel", parallel] if parallel > 1 else []), *(["--device", device] if device != "auto" else [])]
    with resumable(f"study {chosen.name}", lambda: kept_cells(study_dir, chosen),
                   lambda: "resume with: " + command_line("study", study_dir, *flags)):
        data = run_study(chosen, study_dir, executor=executor, parallel=parallel, device=device,
                         progress=progress and not quiet, slurm=slurm, dry_run=dry_run, wait=wait,
                         wait_minutes=wait_timeout, ignore_slurm_jobs=ignore_slurm_jobs)
    _print_study(study_dir, chosen, data)


def _print_study(study_dir: Path, plan, data: dict | None = None, console=None) -> None:
    """The cells' status table: ids and reasons wrap inside their columns (never cut with "..."), numbers
    stay whole."""
    from rich.table import Table

    from spikeguard.results import longest_word, terminal_console
    from spikeguard.study.state import collect
    from spikeguard.study.summary import counts_text

    data = data or collect(study_dir, plan)
    table = Table(title=f"study {data['name']} in {study_dir}: {counts_text(data['counts'])}")
    table.add_column("cell", overflow="fold", ratio=2, min_width=12)
    table.add_column("status", no_wrap=True, min_width=longest_word(["status", *(c["status"] for c in data["cells"])]))
    for column in ("clean %", "worst case %", "seconds"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=3, min_width=12)
    for cell in data["cells"]:
        numbers = cell.get("numbers") or {}
        seconds = sum((cell.get("timing") or {}).values())
        table.add_row(cell["id"], cell["status"], *(f"{100 * numbers[k]:.1f}" if k in numbers else "-"
                                                    for k in ("clean", "worst_case")),
                      f"{seconds:.0f}" if seconds else "-", cell.get("reason", ""))
    (console or terminal_console()).print(table)
