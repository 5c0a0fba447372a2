"""One cell of a study: train (or resume), evaluate, analyse, then record the numbers its files hold.

Every step is skipped when its output is on disk and picked up where a killed run left it: training through
``train.resume`` from the newest checkpoint, an evaluation through its kept batches (evaluate --resume), an
analysis redone (it is written to a hidden folder and moved into place only when complete). The numbers in
the cell's record are always read back from the files, never from memory, so a cell that ran in another
process, on another machine, or over two reruns records the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.schema import AttackResult, read_results
from spikeguard.study.plan import StudyPlan
from spikeguard.study.state import (
    cell_dir,
    cell_record_path,
    evaluation_path,
    log_line,
    now,
    read_cell_record,
    write_cell_record,
)

ANALYSIS = "analysis"
TRAINED = "train"


def run_cell(study: Path, plan: StudyPlan, cell_id: str, *, device: str = "auto", progress: bool = True,
             job: str | None = None) -> dict:
    """Run the cell's missing steps; returns its record. A step's failure ends the cell as failed (with the
    one-line reason) and is not raised: the study goes on with the other cells. An interrupt (Ctrl-C, a kill)
    leaves it running, so that the next run resumes it. ``job``: the Slurm job running it, kept in the record
    so that a rerun leaves the cell to that job while it lives."""
    import torch

    from spikeguard.distributed import is_main
    from spikeguard.locks import claim

    study = Path(study)
    cell = plan.cell(cell_id)
    with claim(cell_record_path(study, cell_id), take_over=True):  # one process per cell; a killed one's lock goes
        previous = read_cell_record(study, cell_id)
        timing = dict(previous.get("timing") or {})
        steps = dict(previous.get("steps") or {})
        from spikeguard.provenance import machine_description

        base = {"settings": cell.settings, "threads": plan.threads, "host": socket.gethostname(),
                "machine": machine_description(), "pid": os.getpid(),
                "started": now(), **({"job": job} if job else {})}
        threads_before = torch.get_num_threads()
        torch.set_num_threads(plan.threads)  # the same under every executor, so the numbers are too

        def record(status: str, **extra: Any) -> dict:
            data = {**base, "status": status, "steps": steps, "timing": timing, **extra}
            if is_main():
                write_cell_record(study, cell_id, data)
            return data

        record("running")
        log_line(study, f"cell {cell_id}: running (pid {os.getpid()}, {plan.threads} torch threads)")
        try:
            for name, step in cell_steps(plan, cell_id):
                if steps.get(name) == "done" and step_output_present(study, plan, cell_id, name):
                    continue
                t0 = time.perf_counter()
                step(study, plan, cell_id, device=device, progress=progress)
                timing[name] = round(time.perf_counter() - t0, 2)
                steps[name] = "done"
                record("running")
            numbers = cell_numbers(study, plan, cell_id)
        except UserError as e:
            log_line(study, f"cell {cell_id}: failed: {e}")
            return record("failed", reason=one_line(str(e)))
        except Exception as e:  # a bug or an environment fault: the cell fails, the study goes on
            log_line(study, f"cell {cell_id}: failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            return record("failed", reason=one_line(f"{type(e).__name__}: {e}"))
        finally:
            torch.set_num_threads(threads_before)
        log_line(study, f"cell {cell_id}: done")
        return record("done", numbers=numbers, finished=now())


def one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def cell_steps(plan: StudyPlan, cell_id: str) -> list[tuple[str, Any]]:
    """The cell's steps in order; an ensemble's are its evaluations only (its members train and are analysed)."""
    if plan.cell(cell_id).members:
        return [(f"evaluate-{k}", _evaluate_step(k)) for k in range(1, len(plan.evaluate) + 1)]
    steps = [(TRAINED, train_step)]
    steps += [(f"evaluate-{k}", _evaluate_step(k)) for k in range(1, len(plan.evaluate) + 1)]
    if plan.analyze is not None:
        steps.append((ANALYSIS, analyze_step))
    return steps


def step_output_present(study: Path, plan: StudyPlan, cell_id: str, name: str) -> bool:
    """A step recorded as done still needs its output on disk (a user may have removed it to redo it).
    Training's output is best.pt, or, for a cell kept without checkpoints (studies/results/ in the repository
    holds records, results and analyses only), its training log together with every later step's output:
    nothing left to do needs the model."""
    run_dir = cell_dir(study, cell_id)
    if name == TRAINED:
        from spikeguard.rundir import METRICS

        return (run_dir / "best.pt").is_file() or ((run_dir / METRICS).is_file() and all(
            step_output_present(study, plan, cell_id, later) for later, _ in cell_steps(plan, cell_id)
            if later != TRAINED))
    if name == ANALYSIS:
        return (run_dir / ANALYSIS / "analysis.json").is_file()
    number = int(name.split("-")[1])
    return evaluation_path(run_dir, number, str(plan.evaluate[number - 1]["suite"])).is_file()


# ---- the steps -------------------------------------------------------------------------------------------

def train_step(study: Path, plan: StudyPlan, cell_id: str, *, device: str, progress: bool) -> None:
    from spikeguard.checkpoint import training_checkpoints
    from spikeguard.training import resume, train

    run_dir = cell_dir(study, cell_id)
    if run_dir.is_dir() and training_checkpoints(run_dir):
        resume(run_dir, progress=progress, device=device)  # a finished run returns at once
        return
    clear_unstarted(run_dir)
    cell = plan.cell(cell_id)
    config = dataclasses.replace(cell.config, device=device)
    if cell.teachers:  # the teacher cells' run directories (their best.pt), which the plan names by cell id
        from spikeguard.rundir import BEST

        for teacher in cell.teachers:
            if not (cell_dir(study, teacher) / BEST).is_file():
                raise UserError(f"teacher cell '{teacher}' has no {BEST} (kept without checkpoints?): a student "
                                "learns from its teachers' models, so remove that cell's folder and record to "
                                "train it again here")
        config.teacher = [str(cell_dir(study, t).absolute()) for t in cell.teachers]
    train(config, run_dir, progress=progress)


def clear_unstarted(run_dir: Path) -> None:
    """A run killed before its first checkpoint left only its config, an empty log and its lock: remove them,
    under the run's lock, so that training starts over. Anything else there is refused, never deleted."""
    from spikeguard.locks import DIR_LOCK, claim, is_lock_file
    from spikeguard.rundir import CONFIG, METRICS

    if not run_dir.exists():
        return
    with claim(run_dir, directory=True, take_over=True):
        for path in run_dir.iterdir():
            if path.name in (CONFIG, METRICS) or (path.name.startswith(".") and path.name.endswith(".tmp")
                                                  and not is_lock_file(path.name)):
                path.unlink()
            elif path.name != DIR_LOCK and not is_lock_file(path.name):
                raise UserError(f"'{run_dir}' holds '{path.name}' but no training checkpoint; move it away to "
                                "train this cell again")


def _evaluate_step(number: int):
    def step(study: Path, plan: StudyPlan, cell_id: str, *, device: str, progress: bool) -> None:
        evaluate_step(study, plan, cell_id, number, device=device, progress=progress)

    return step


def evaluate_step(study: Path, plan: StudyPlan, cell_id: str, number: int, *, device: str, progress: bool) -> None:
    from spikeguard.distributed import is_main
    from spikeguard.evaluation import EvalConfig, run_evaluation
    from spikeguard.evaluation.batch_store import BatchStore
    from spikeguard.evaluation.targets import load_target

    run_dir = cell_dir(study, cell_id)
    settings = plan.evaluate[number - 1]
    out = evaluation_path(run_dir, number, str(settings["suite"]))
    if out.is_file():
        return
    cell = plan.cell(cell_id)
    cfg = cell.config
    config = EvalConfig(**settings, device=device, progress=progress).validated()
    if cell.members:
        from spikeguard.study.ensemble import ensemble_target

        target = ensemble_target([cell_dir(study, member) for member in cell.members], cfg.data_dir, cfg.download)
    else:
        target = load_target(run_dir, None, None, None, cfg.data_dir, cfg.download)
    resume = (BatchStore(out, {}).folder / "identity.json").is_file()  # batches a killed run finished
    result = run_evaluation(config, target, keep_batches=out, resume=resume)
    if is_main():
        result.write(out)


def analyze_step(study: Path, plan: StudyPlan, cell_id: str, *, device: str, progress: bool) -> None:
    from spikeguard.analysis.analyze import AnalysisSettings, analyze_checkpoint, parse_eps_list
    from spikeguard.distributed import barrier, is_main

    run_dir = cell_dir(study, cell_id)
    if is_main():  # the analysis is one process's work; under torchrun the other ranks wait
        options = dict(plan.analyze or {})
        eps = options.pop("eps", None)
        eps = parse_eps_list([str(e) for e in (eps if isinstance(eps, list) else [eps])]) if eps is not None else ()
        partial = run_dir / f".{ANALYSIS}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # a killed analysis starts over
        headline = evaluation_path(run_dir, 1, str(plan.evaluate[0]["suite"]))
        analyze_checkpoint(run_dir, AnalysisSettings(eps=eps, **options), partial,
                           results=headline if headline.is_file() else None, device=device,
                           data_dir=plan.cell(cell_id).config.data_dir, progress=progress)
        os.replace(partial, run_dir / ANALYSIS)
    barrier()


# ---- the numbers -----------------------------------------------------------------------------------------

def cell_numbers(study: Path, plan: StudyPlan, cell_id: str) -> dict[str, Any]:
    """What the aggregation reads, from the cell's files: training, every evaluation, the analysis."""
    from spikeguard.rundir import METRICS, read_metrics

    run_dir = cell_dir(study, cell_id)
    if plan.cell(cell_id).members:
        return ensemble_numbers(study, plan, cell_id)
    metrics = read_metrics(run_dir / METRICS)
    if not metrics:
        raise UserError(f"'{run_dir / METRICS}' holds no finished epoch")
    best = max(metrics, key=lambda r: r["val_accuracy"])  # the epoch best.pt holds (the first of equals)
    numbers: dict[str, Any] = {
        "epochs": metrics[-1]["epoch"], "best_epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
        "train_grad_l1": best.get("grad_l1"), "train_grad_l2": best.get("grad_l2"),
        "train_grad_zero_fraction": best.get("grad_zero_fraction"),
        # on the fixed validation batch at the best epoch, for every defense (vanilla included): the SR penalty's
        # value without a gradient, the margin's finite difference and ||dm/dx||_1 (None in older runs)
        "train_sr_penalty": best.get("val_sr_penalty"), "train_margin_penalty": best.get("val_margin_penalty"),
        "train_grad_margin_l1": best.get("grad_margin_l1"),
    }
    numbers["evaluations"] = evaluation_numbers(plan, run_dir)
    numbers["clean"], numbers["worst_case"] = numbers["evaluations"][0]["clean"], numbers["evaluations"][0]["headline"]
    analysis_file = run_dir / ANALYSIS / "analysis.json"
    if analysis_file.is_file():
        numbers["analysis"] = analysis_numbers(json.loads(analysis_file.read_text()))
    return numbers


def ensemble_numbers(study: Path, plan: StudyPlan, cell_id: str) -> dict[str, Any]:
    """The ensemble's evaluations, and its activity and energy from its members' analyses: SOPs and energy
    summed, the firing rate their mean (None where a member has no analysis)."""
    cell = plan.cell(cell_id)
    evaluations = evaluation_numbers(plan, cell_dir(study, cell_id))
    numbers: dict[str, Any] = {"members": list(cell.members), "evaluations": evaluations,
                               "clean": evaluations[0]["clean"], "worst_case": evaluations[0]["headline"]}
    analyses = []
    for member in cell.members:
        path = cell_dir(study, member) / ANALYSIS / "analysis.json"
        if not path.is_file():
            return numbers
        analyses.append(analysis_numbers(json.loads(path.read_text())))

    def total(key: str) -> float | None:
        values = [a.get(key) for a in analyses]
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    rates = [float(a["firing_rate"]) for a in analyses if a.get("firing_rate") is not None]
    numbers["analysis"] = {"energy_joules": total("energy_joules"), "sops": total("sops"),
                           "ann_energy_joules": total("ann_energy_joules"), "analog_macs": total("analog_macs"),
                           "firing_rate": sum(rates) / len(rates) if len(rates) == len(analyses) else None,
                           "from_members": True}
    return numbers


def evaluation_numbers(plan: StudyPlan, run_dir: Path) -> list[dict[str, Any]]:
    """Each of the plan's evaluations of the cell, as the aggregation reads it."""
    from spikeguard.results import column_label

    evaluations = []
    for number, settings in enumerate(plan.evaluate, start=1):
        record = read_results(evaluation_path(run_dir, number, str(settings["suite"])))
        evaluations.append({
            "suite": record.suite, "eps": record.eps, "n": record.n,
            "clean": record.clean_accuracy, "worst_case": record.ensemble_accuracy,
            "headline": record.headline_accuracy(),
            "is_bound": record.headline.is_bound if record.headline else True,
            "attacks": {column_label(a): a.accuracy for a in record.attacks},
            # each gradient attack alone under each estimator: which estimator breaks the model
            "per_estimator": {column_label(a): dict(a.accuracy_per_estimator) for a in record.attacks
                              if len(a.accuracy_per_estimator) > 1 and not a.cumulative},
            # the published protocol's columns (FGSM, PGD-10/30/50) of attacks run alone
            "columns": paper_columns(record.attacks),
            "flags": record.flag_names,
        })
    return evaluations


def paper_columns(attacks: list[AttackResult]) -> dict[str, float]:
    from spikeguard.report import attack_column

    columns: dict[str, float] = {}
    for attack in attacks:
        if attack.cumulative:
            continue  # a cumulative accuracy is the worst case up to it, not this attack's alone
        column = attack_column(attack.to_json())
        if column and attack.accuracy is not None:
            columns[column] = min(columns.get(column, 1.0), attack.accuracy)
    return columns


def analysis_numbers(analysis: dict) -> dict[str, Any]:
    gradient = analysis.get("gradient") or {}
    layers = analysis.get("layers") or []
    neurons = sum(layer["neurons"] for layer in layers)
    return {
        "estimator": gradient.get("estimator"),
        "grad_l1": gradient.get("l1"), "grad_l2": gradient.get("l2"),
        "grad_zero_fraction": gradient.get("zero_fraction"),
        # over all neurons of the network, each layer weighted by its size (a spike count over neuron-steps)
        "firing_rate": (sum(layer["firing_rate"] * layer["neurons"] for layer in layers) / neurons
                        if neurons else None),
        "sops": analysis.get("sops_total"), "energy_joules": analysis.get("energy_joules"),
        "analog_macs": analysis.get("analog_macs"), "ann_energy_joules": analysis.get("ann_energy_joules"),
        # per spiking layer, in network order: where SR moves the activity and the synaptic operations
        "layers": [{key: layer.get(key) for key in ("name", "neurons", "firing_rate", "silent_fraction", "sops")}
                   for layer in layers],
        "gap": [{"eps": row["eps"], "rho_adv": row["rho_adv"], "rho_rand_abs": row["rho_rand_abs"],
                 "ratio_abs": row["ratio_abs"], "ratio_margin_abs": row.get("ratio_margin_abs")}
                for row in analysis.get("per_eps", [])],
        "mechanism": mechanism_numbers(analysis.get("mechanism")),
    }


# The decomposition's quantities a study aggregates: per estimator and point, each one's median and mean.
MECHANISM_KEYS = ("f", "m", "f_one_minus_f", "f_l1", "m_l1", "m_l2", "m_l1_over_l2", "m_effective_support",
                  "m_zero_fraction", "flip_distance")


def mechanism_numbers(mechanism: dict | None) -> dict[str, Any] | None:
    """The analysis's mechanism block cut to what the study summary shows (None for an older analysis)."""
    if not mechanism:
        return None
    estimators = {name: {point: {key: values[key] for key in MECHANISM_KEYS if key in values}
                         for point, values in points.items()}
                  for name, points in mechanism["estimators"].items()}
    identity = max((values["identity"]["max_relative_error"] or 0.0 for points in mechanism["estimators"].values()
                    for values in points.values()), default=None)
    return {"eps": mechanism["eps"], "training_estimator": mechanism["training_estimator"],
            "batchnorm": mechanism["batchnorm"], "estimators": estimators, "identity_max_relative_error": identity,
            "surrogate_zeros": {name: z.get("layers", {}) for name, z in (mechanism.get("surrogate_zeros") or {}).items()},
            "flip": {key: mechanism["flip"][key] for key in (
                "samples", "flip_distance", "min_eps_adv", "rank_correlation", "agreement_with_attack",
                "two_step_distance", "two_step_agreement_with_attack", "min_eps_agreement_with_attack")}}
