"""Where a study's cells run: here, one after another or N at once; through submitit's local executor; or
as a Slurm job array through submitit. Every executor runs the same ``run_cell`` with the plan's thread
count, so every executor writes the same numbers.

Hand-written (not submitit alone) because a study must also run without it, in one process, and because
the per-cell resume logic lives in the cell, not in the scheduler.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.progress import Reporter
from spikeguard.registry import Registry
from spikeguard.study.plan import StudyPlan
from spikeguard.study.state import (
    cell_log_path,
    log_line,
    now,
    read_cell_record,
    read_plan,
    write_cell_record,
    write_study,
)

SUBMITIT_FOLDER = "submitit"
SLURM_SCRIPT = "slurm-array.sbatch"
POLL_S = 5.0  # between two looks at the Slurm jobs --wait waits for
WAIT_MINUTES = 24 * 60  # --wait's default limit: a day

EXECUTORS = Registry("executor")


@dataclass
class Launch:
    """How to run the cells of one invocation."""

    study: Path
    plan: StudyPlan
    parallel: int = 1
    device: str = "auto"
    progress: bool = True
    slurm: dict[str, Any] = field(default_factory=dict)  # the plan's slurm block with the flags over it
    dry_run: bool = False
    wait: bool = False
    wait_minutes: float = WAIT_MINUTES
    news: Reporter = field(default_factory=lambda: Reporter(enabled=False))

    def say(self, text: str) -> None:
        self.news.line(text)
        log_line(self.study, text)


def finished(study: Path, plan: StudyPlan, cell_id: str) -> bool:
    from spikeguard.study.cell import cell_steps, step_output_present

    record = read_cell_record(study, cell_id)
    return record.get("status") == "done" and all(step_output_present(study, plan, cell_id, name)
                                                  for name, _ in cell_steps(plan, cell_id))


# ---- here, in this process ------------------------------------------------------------------------------

@EXECUTORS.register("local", description="this machine: one cell after another, or --parallel N at once")
def run_local(launch: Launch, cells: list[str]) -> None:
    if launch.parallel > 1:
        return _run_pool(launch, cells)
    from spikeguard.study.cell import run_cell

    started = time.perf_counter()
    for number, cell_id in enumerate(cells, start=1):
        launch.say(f"study {launch.plan.name}: cell {number} of {len(cells)}: {cell_id} "
                   f"({time.perf_counter() - started:.0f} s so far)")
        try:
            record = run_cell(launch.study, launch.plan, cell_id, device=launch.device, progress=launch.progress)
        finally:
            write_study(launch.study, launch.plan)
        _report(launch, cell_id, record)


def _report(launch: Launch, cell_id: str, record: dict) -> None:
    if record.get("status") == "done":
        n = record["numbers"]
        launch.say(f"cell {cell_id}: done: clean {100 * n['clean']:.1f}%, worst case {100 * n['worst_case']:.1f}% "
                   f"({sum((record.get('timing') or {}).values()):.0f} s)")
    else:
        launch.say(f"cell {cell_id}: {record.get('status')}: {record.get('reason', 'no reason recorded')}")


def _run_pool(launch: Launch, cells: list[str]) -> None:
    """N cells at once in N spawned worker processes (nothing inherited from this one), each cell's output in
    DIR/cells/ID.log. A worker runs its cells one after another, as the sequential executor does."""
    launch.say(f"study {launch.plan.name}: {len(cells)} cells, {launch.parallel} at once; each one's output in "
               f"{launch.study / 'cells'}/ID.log")
    context = get_context("spawn")
    started = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=launch.parallel, mp_context=context)
    try:
        running = {pool.submit(cell_in_process, str(launch.study), cell_id, launch.device): cell_id
                   for cell_id in cells}
        done_count = 0
        while running:
            finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished_now:
                cell_id = running.pop(future)
                done_count += 1
                try:
                    record = future.result()
                except Exception as e:  # the worker process died (killed, out of memory)
                    record = {"status": "failed", "reason": f"its process ended: {type(e).__name__}: {e}"}
                write_study(launch.study, launch.plan)
                _report(launch, cell_id, record)
                launch.say(f"study {launch.plan.name}: {done_count} of {len(cells)} cells ended, "
                           f"{time.perf_counter() - started:.0f} s")
    except BaseException:
        _stop_pool(pool, launch)
        raise
    pool.shutdown()


def _stop_pool(pool: ProcessPoolExecutor, launch: Launch) -> None:
    """The coordinator was interrupted (Ctrl-C, SIGTERM): queued cells never start, and the running ones stop
    as a kill stops them (a cell's lock dies with its worker, so it shows as killed and resumes), instead of
    the pool's default of waiting for every queued cell to run."""
    pool.shutdown(wait=False, cancel_futures=True)
    workers = multiprocessing.active_children()  # the pool's spawned workers: the coordinator starts no others
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=30)
    write_study(launch.study, launch.plan)


def cell_in_process(study: str, cell_id: str, device: str) -> dict:
    """A worker's whole job: its output to the cell's log, the plan read back from DIR/plan.yaml."""
    with open(cell_log_path(Path(study), cell_id), "a") as log:  # descriptors 1 and 2 now write to it
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
    from spikeguard.study.cell import run_cell

    return run_cell(Path(study), read_plan(Path(study)), cell_id, device=device, progress=True)


# ---- submitit ---------------------------------------------------------------------------------------------

def cell_job(study: str, cell_id: str, device: str) -> str:
    """What a submitit job runs. A job of several tasks (a multi-GPU Slurm cell) is one torch.distributed
    group: submitit's environment gives each task its rank, as torchrun would."""
    import submitit

    environment = submitit.JobEnvironment()
    if environment.num_tasks > 1:
        # every task sees the node's GPUs; init_distributed picks cuda:LOCAL_RANK
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    from spikeguard.distributed import close_distributed, is_main
    from spikeguard.study.cell import run_cell

    on_slurm = environment.cluster == "slurm"
    if on_slurm:  # scancel, a time limit, a preemption: the cell records why it stopped (submitit ignores TERM)
        signal.signal(signal.SIGTERM, _stopped_by_slurm)
    plan = read_plan(Path(study))
    try:
        record = run_cell(Path(study), plan, cell_id, device=device, progress=True,
                          job=environment.job_id if on_slurm else None)
    finally:
        close_distributed()
        if on_slurm and is_main():  # the cell's record changed: so does study.json, also after a stop
            write_study(Path(study), plan)
    return record["status"]


class StoppedBySlurm(Exception):
    """Slurm sent the job SIGTERM."""


def _stopped_by_slurm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second TERM ends the job at once
    raise StoppedBySlurm("Slurm stopped the job (SIGTERM: scancel, its time limit, or preemption)")


@EXECUTORS.register("submitit-local", description="submitit's local executor: --parallel N jobs on this "
                    "machine, each running its share of the cells (the cluster path, tested without Slurm)")
def run_submitit_local(launch: Launch, cells: list[str]) -> None:
    submitit = _submitit()
    executor = submitit.LocalExecutor(folder=launch.study / SUBMITIT_FOLDER)
    minutes = int(launch.slurm.get("time_per_cell", 7 * 24 * 60)) * len(cells)
    executor.update_parameters(timeout_min=minutes, tasks_per_node=1)
    shares = [cells[k::launch.parallel] for k in range(min(launch.parallel, len(cells)))]
    jobs = [(share, executor.submit(cells_job, str(launch.study), share, launch.device)) for share in shares]
    launch.say(f"study {launch.plan.name}: {len(jobs)} submitit job(s): "
               + "; ".join(f"{job.job_id}: {', '.join(share)}" for share, job in jobs))
    for share, job in jobs:
        try:
            job.result()
        except Exception as e:  # the job itself ended (killed, timed out); its cells' records say how far
            for cell_id in share:
                if read_cell_record(launch.study, cell_id).get("status") not in ("done", "failed"):
                    write_cell_record(launch.study, cell_id, {"status": "failed",
                                                              "reason": f"job {job.job_id} ended: {_first_line(e)}"})
        write_study(launch.study, launch.plan)
        for cell_id in share:
            _report(launch, cell_id, read_cell_record(launch.study, cell_id))


def cells_job(study: str, cell_ids: list[str], device: str) -> list[str]:
    return [cell_job(study, cell_id, device) for cell_id in cell_ids]


@EXECUTORS.register("slurm", description="a Slurm job array through submitit (--partition, --gpus-per-cell, "
                    "--time-per-cell); --dry-run writes the sbatch script without submitting")
def submit_slurm(launch: Launch, cells: list[str]) -> None:
    submitit: Any = _submitit()  # imported on use: the executor is optional
    if launch.dry_run:  # submitit's own script, built where Slurm's srun need not exist
        class Planning(submitit.SlurmExecutor):
            @classmethod
            def affinity(cls) -> int:
                return 1

        executor = Planning(folder=launch.study / SUBMITIT_FOLDER)
    else:
        try:
            executor = submitit.SlurmExecutor(folder=launch.study / SUBMITIT_FOLDER)
        except RuntimeError as e:  # submitit found no srun: not a Slurm machine
            raise UserError(f"cannot submit to Slurm from here ({e}); --dry-run writes the job script instead") \
                from None
    parameters = slurm_parameters(launch.plan, launch.slurm, len(cells), launch.parallel)
    executor.update_parameters(**parameters)
    if launch.dry_run:
        executor.parameters["map_count"] = len(cells)  # as submitit sets it for an array
        script = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")  # what sbatch gets
        path = launch.study / SLURM_SCRIPT
        from spikeguard.files import write_text

        write_text(path, script)
        launch.say(f"dry run: {len(cells)} cells as one Slurm array; the script is {path}; array task K runs cell "
                   f"K of: {', '.join(cells)}")
        return
    said = io.StringIO()  # submitit prints sbatch's complaint itself; the user gets it once, as one line
    try:
        with contextlib.redirect_stderr(said), executor.batch():
            jobs = [(cell_id, executor.submit(cell_job, str(launch.study), cell_id, launch.device))
                    for cell_id in cells]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as e:
        raise UserError(f"sbatch refused the array: {_sbatch_reason(str(e) or said.getvalue())} (partition "
                        f"{parameters['partition']}, {parameters.get('gpus_per_node', 0)} GPU(s) per cell; Slurm's "
                        "commands find the cluster through SLURM_CONF or /etc/slurm)") from None
    for cell_id, job in jobs:
        write_cell_record(launch.study, cell_id, {"status": "queued", "job": job.job_id, "submitted": now()})
    write_study(launch.study, launch.plan)
    launch.say(f"study {launch.plan.name}: submitted {len(jobs)} cells as Slurm array {jobs[0][1].job_id.split('_')[0]}; "
               f"`spikeguard study {launch.study} --status` shows them, `spikeguard report {launch.study}` "
               "aggregates what has finished")


def _sbatch_reason(text: str) -> str:
    """sbatch's own words: its fatal line, else its last error line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if "fatal:" in line]
    errors = fatal or [line for line in lines if "error:" in line] or lines or ["no reason given"]
    return re.sub(r"^\S*sbatch: (error|fatal): ", "", errors[-1])


def wait_for_cells(launch: Launch, cells: list[str]) -> None:
    """Watch the Slurm jobs of ``cells`` until each has ended, saying each cell's end as it comes and keeping
    study.json current; gives up after ``launch.wait_minutes`` (the jobs go on; a rerun with --wait waits
    again)."""
    from spikeguard.study.slurm_jobs import settle

    started = time.monotonic()
    left = list(cells)
    launch.say(f"study {launch.plan.name}: waiting for {len(left)} cell(s) on Slurm (at most "
               f"{launch.wait_minutes:g} min)")
    while left:
        standing = settle(launch.study, left, launch.plan.name)
        ended = [cell for cell in left if standing[cell] == "ended"]
        if ended:
            write_study(launch.study, launch.plan)
        for cell_id in ended:
            _report(launch, cell_id, read_cell_record(launch.study, cell_id))
        left = [cell for cell in left if cell not in ended]
        if left and all(standing[cell] == "unchecked" for cell in left):
            launch.say(f"study {launch.plan.name}: neither squeue nor sacct answers here; stopped waiting for "
                       f"{len(left)} cell(s)")
            return
        if left and time.monotonic() - started > 60 * launch.wait_minutes:
            launch.say(f"study {launch.plan.name}: stopped waiting after {launch.wait_minutes:g} min; "
                       f"{len(left)} cell(s) still on Slurm; `spikeguard study {launch.study} --executor slurm "
                       "--wait` waits again")
            return
        if left:
            time.sleep(POLL_S)
    launch.say(f"study {launch.plan.name}: every awaited cell has ended ({time.monotonic() - started:.0f} s)")


def slurm_parameters(plan: StudyPlan, slurm: dict[str, Any], cells: int, parallel: int = 1) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one cell per array task. A cell over several GPUs is one task
    per GPU on one node (a torch.distributed group, see cell_job)."""
    if not slurm.get("partition"):
        raise UserError("--executor slurm needs a partition: --partition NAME or slurm.partition in the plan")
    gpus = int(slurm["gpus_per_cell"] if slurm.get("gpus_per_cell") is not None else 1)
    if gpus < 0:
        raise UserError(f"gpus per cell must be at least 0, got {gpus}")
    params = {"job_name": plan.name, "partition": slurm["partition"], "time": int(slurm.get("time_per_cell", 60)),
              "nodes": 1, "ntasks_per_node": max(gpus, 1), "cpus_per_task": int(slurm.get("cpus_per_cell") or
                                                                                plan.threads),
              "array_parallelism": parallel if parallel > 1 else cells}
    if gpus:
        params["gpus_per_node"] = gpus
    if slurm.get("mem_gb"):
        params["mem"] = f"{int(slurm['mem_gb'])}GB"
    for key in ("account", "qos", "constraint"):
        if slurm.get(key):
            params[key] = str(slurm[key])
    if slurm.get("setup"):
        params["setup"] = [str(line) for line in slurm["setup"]]
    return params


def default_gpus(slurm: dict[str, Any], device: str) -> int:
    """GPUs per cell where neither the flag nor the plan says: none for --device cpu; else one if the
    partition has GPUs, none if it has not (sinfo); one where sinfo cannot tell (a dry run off the cluster)."""
    if slurm.get("gpus_per_cell") is not None:
        return int(slurm["gpus_per_cell"])
    if device == "cpu":
        return 0
    try:
        done = subprocess.run(["sinfo", "--noheader", f"--partition={slurm.get('partition', '')}", "--format=%G"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 1
    if done.returncode != 0 or not done.stdout.strip():
        return 1
    return int(any(re.match(r"gpu(:|$)", gres) for line in done.stdout.split() for gres in line.split(",")))


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("this executor needs submitit: pip install 'spikeguard[cluster]'") from None
    return submitit


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"
