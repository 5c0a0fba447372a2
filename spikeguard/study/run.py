"""`spikeguard study`: run a plan's missing cells with an executor, keep study.json current, then write the
aggregated summary. A rerun skips every finished cell and resumes the others where they stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikeguard.locks import claim
from spikeguard.progress import Reporter
from spikeguard.study.executors import EXECUTORS, Launch, finished, slurm_parameters, still_queued
from spikeguard.study.plan import StudyPlan
from spikeguard.study.state import STUDY, open_study, read_cell_record, write_study


def run_study(plan: StudyPlan, out: Path, *, executor: str = "local", parallel: int = 1, device: str = "auto",
              progress: bool = True, slurm: dict[str, Any] | None = None, dry_run: bool = False,
              wait: bool = False) -> dict:
    """Run ``plan`` into ``out``; returns study.json's content."""
    run = EXECUTORS.load(executor)  # an unknown name is refused before anything is written
    slurm = {**plan.slurm, **(slurm or {})}
    if executor == "slurm":
        slurm_parameters(plan, slurm, len(plan.cells))  # a missing partition, likewise
    study = open_study(plan, Path(out))
    with claim(study / STUDY, take_over=True):  # one coordinator per study; a killed one's lock is taken over
        news = Reporter(enabled=progress)
        launch = Launch(study, plan, parallel=parallel, device=device, progress=progress,
                        slurm=slurm, dry_run=dry_run, wait=wait, news=news)
        done = [c.id for c in plan.cells if finished(study, plan, c.id)]
        waiting = [c.id for c in plan.cells if c.id not in done and executor == "slurm"
                   and still_queued(study, read_cell_record(study, c.id))]
        todo = [c.id for c in plan.cells if c.id not in done and c.id not in waiting]
        write_study(study, plan)
        launch.say(f"study {plan.name}: {len(plan.cells)} cells: {len(done)} finished before, "
                   + (f"{len(waiting)} still queued on Slurm, " if waiting else "")
                   + f"{len(todo)} to run ({executor}" + (f", {parallel} at once" if parallel > 1 else "")
                   + f", {plan.threads} torch thread(s) each) into {study}")
        if todo:
            run(launch, todo)
        data = write_study(study, plan)
        if any(cell["status"] == "done" for cell in data["cells"]):
            from spikeguard.study.summary import write_summary

            markdown, page = write_summary(study)
            launch.say(f"study {plan.name}: {data['counts']}; wrote {markdown} and {page}")
    return data
