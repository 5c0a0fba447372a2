"""`spikeguard study`: run a plan's missing cells with an executor, keep study.json current, then write the
aggregated summary. A rerun skips every finished cell, leaves a cell to its Slurm job while that job lives
(whatever the executor), and resumes the others where they stopped."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from spikeguard.locks import claim
from spikeguard.progress import Reporter
from spikeguard.study.executors import (
    EXECUTORS,
    WAIT_MINUTES,
    Launch,
    default_gpus,
    finished,
    slurm_parameters,
    wait_for_cells,
)
from spikeguard.study.plan import StudyPlan
from spikeguard.study.slurm_jobs import held_job, settle
from spikeguard.study.state import STUDY, open_study, read_cell_record, write_study

IGNORE_FLAG = "--ignore-slurm-jobs"


def run_study(plan: StudyPlan, out: Path, *, executor: str = "local", parallel: int = 1, device: str = "auto",
              progress: bool = True, slurm: dict[str, Any] | None = None, dry_run: bool = False,
              wait: bool = False, wait_minutes: float = WAIT_MINUTES, ignore_slurm_jobs: bool = False) -> dict:
    """Run ``plan`` into ``out``; returns study.json's content."""
    run = EXECUTORS.load(executor)  # an unknown name is refused before anything is written
    slurm = {**plan.slurm, **(slurm or {})}
    if executor == "slurm":
        slurm_parameters(plan, slurm, len(plan.cells))  # a missing partition, likewise
        plan = dataclasses.replace(plan, slurm=dict(slurm))  # kept in DIR/plan.yaml: a rerun submits alike
        slurm["gpus_per_cell"] = default_gpus(slurm, device)
    study = open_study(plan, Path(out))
    with claim(study / STUDY, take_over=True):  # one coordinator per study; a killed one's lock is taken over
        news = Reporter(enabled=progress)
        launch = Launch(study, plan, parallel=parallel, device=device, progress=progress, slurm=slurm,
                        dry_run=dry_run, wait=wait, wait_minutes=wait_minutes, news=news)
        done = [c.id for c in plan.cells if finished(study, plan, c.id)]
        waiting, unchecked = slurm_held(study, plan, [c.id for c in plan.cells if c.id not in done])
        if ignore_slurm_jobs and waiting:
            launch.say(f"study {plan.name}: {IGNORE_FLAG}: running {len(waiting)} cell(s) whatever their Slurm jobs "
                       "do (cancel those jobs: both would write the same cells)")
            waiting, unchecked = [], []
        todo = [c.id for c in plan.cells if c.id not in done and c.id not in waiting]
        if plan.reuse and todo and not dry_run:
            from spikeguard.study.reuse import reuse_cells

            copied = reuse_cells(study, plan, todo)
            for cell_id, source in copied.items():
                launch.say(f"cell {cell_id}: copied from {source} (the same training configuration, evaluations, "
                           "analysis and threads)")
            done += list(copied)
            todo = [cell_id for cell_id in todo if cell_id not in copied]
        write_study(study, plan)
        launch.say(f"study {plan.name}: {len(plan.cells)} cells: {len(done)} finished before, "
                   + (f"{len(waiting)} still queued or running on Slurm, " if waiting else "")
                   + f"{len(todo)} to run ({executor}" + (f", {parallel} at once" if parallel > 1 else "")
                   + f", {plan.threads} torch thread(s) each) into {study}")
        if unchecked:
            launch.say(f"study {plan.name}: {len(unchecked)} cell(s) hold Slurm jobs that cannot be checked here "
                       f"(neither squeue nor sacct answers); they are left to those jobs; {IGNORE_FLAG} runs them")
        # An ensemble averages its members' finished models and a distilled student learns from its teachers', so
        # the cells they need run first; they then start ahead of the other cells (an ensemble is attacked through
        # every member: the longest cell, which at the end would run alone while the other workers idle).
        dependent = [cell_id for cell_id in todo if plan.cell(cell_id).needs]
        wanted = {m for cell_id in dependent for m in plan.cell(cell_id).needs}
        needed_first = [cell_id for cell_id in todo if cell_id in wanted]
        others = [cell_id for cell_id in todo if cell_id not in wanted and cell_id not in dependent]
        if executor == "slurm":  # queued, not run here: one array, and a dependent cell waits for a rerun as before
            needed_first, others = [], [cell_id for cell_id in todo if cell_id not in dependent]
        if needed_first:
            run(launch, needed_first)
        ready = [c for c in dependent if all(finished(study, plan, m) for m in plan.cell(c).needs)]
        for cell_id in dependent:
            if cell_id not in ready:
                needs = plan.cell(cell_id).needs
                count = sum(finished(study, plan, m) for m in needs)
                what = "members" if plan.cell(cell_id).members else "teachers"
                launch.say(f"cell {cell_id}: waits for its {what} ({count} of {len(needs)} finished); a rerun "
                           "runs it once they all have")
        if ready or others:
            run(launch, ready + others)
        if wait and executor == "slurm" and not dry_run:
            wait_for_cells(launch, [c.id for c in plan.cells if c.id in waiting or c.id in todo])
        data = write_study(study, plan)
        if any(cell["status"] == "done" for cell in data["cells"]):
            from spikeguard.study.summary import counts_text, write_summary

            markdown, page = write_summary(study)
            launch.say(f"study {plan.name}: {counts_text(data['counts'])}; wrote {markdown} and {page}")
    return data


def kept_cells(study: Path, plan: StudyPlan) -> str:
    """What an interrupted study keeps: its finished cells, and the interrupted cell's checkpoints and
    evaluated batches, from which a rerun resumes it."""
    if not (Path(study) / STUDY).parent.is_dir():
        return "nothing written yet"
    done = sum(finished(Path(study), plan, c.id) for c in plan.cells)
    return (f"{done} of {len(plan.cells)} cells finished and kept; an unfinished cell resumes from its last "
            "checkpoint and evaluated batches")


def slurm_held(study: Path, plan: StudyPlan, cells: list[str]) -> tuple[list[str], list[str]]:
    """Of ``cells``, those whose Slurm job may still run them, and those among them that nothing here can
    check; the others' records are brought up to date first (a job that ended early: failed, with why)."""
    held = [cell for cell in cells if held_job(read_cell_record(study, cell))]
    standing = settle(study, held, plan.name) if held else {}
    return ([cell for cell in held if standing[cell] != "ended"],
            [cell for cell in held if standing[cell] == "unchecked"])


def refresh_study(study: Path, plan: StudyPlan) -> dict:
    """study.json brought up to date with what Slurm says of the study's jobs (``--status``)."""
    slurm_held(study, plan, [c.id for c in plan.cells])
    return write_study(study, plan)
