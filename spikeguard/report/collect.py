"""Finding a report's inputs: results files (read through spikeguard.schema, so every older format is
upgraded on the way in), analyses (with their per-sample rows) and the run directories they belong to, from
explicit files and from directories searched a few levels deep. Each input gets a short unique label; a
results file or analysis that contradicts its run's model is refused."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from spikeguard.analysis.analyze import FORMAT as ANALYSIS_FORMAT
from spikeguard.errors import UserError
from spikeguard.rundir import (
    BEST,
    CONFIG,
    LAST,
    METRICS,
    label_for,
    read_config,
    read_metrics,
    run_directory,
)
from spikeguard.schema import EvalRecord, read_results, results_version

MAX_DEPTH = 3
RUN_MARKERS = (CONFIG, METRICS, BEST, LAST)


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]
    label: str = ""


@dataclass
class ResultsItem:
    """One results file, with the run it belongs to (if any)."""
    path: Path
    record: EvalRecord
    run: Run | None
    label: str = ""


@dataclass
class AnalysisItem:
    """One analysis (analysis.json and its per-sample rows), with the run it belongs to (if any)."""
    path: Path
    data: dict
    run: Run | None
    label: str = ""
    rows: list[dict] = field(default_factory=list)


@dataclass
class Inputs:
    runs: dict[Path, Run] = field(default_factory=dict)
    results: list[ResultsItem] = field(default_factory=list)
    analyses: list[AnalysisItem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _load_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def _kind(data: dict | None) -> str | None:
    if data is None:
        return None
    if data.get("format") == ANALYSIS_FORMAT:
        return "analysis"
    if results_version(data) is not None:
        return "results"
    return None


def _is_run(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def _run_for(path: Path, inputs: Inputs) -> Run | None:
    """The run directory ``path`` is or lies directly in (run/analysis/), loaded once."""
    for candidate in (path, path.parent):
        if candidate.is_dir() and _is_run(candidate):
            key = candidate.resolve()
            if key not in inputs.runs:
                inputs.runs[key] = Run(candidate, read_config(candidate), read_metrics(candidate / METRICS))
            return inputs.runs[key]
    return None


def _check_same_model(what: str, path: Path, found: tuple, run: Run | None) -> None:
    """A results file or analysis must describe the model (and data set) of the run it sits in."""
    if run is None or not run.config:
        return
    expected = (run.config.get("model"), run.config.get("dataset"))
    if None not in expected and found != expected:
        raise UserError(f"{what} '{path}' is for model '{found[0]}' on '{found[1]}', but it sits in run "
                        f"'{run.path}' of model '{expected[0]}' on '{expected[1]}'")


class UnreadableResults(UserError):
    """A file that looks like results but that the schema's reader refuses (malformed, or from a newer
    spikeguard): an error when named as an input, listed as ignored when found by searching."""


def _add_results(path: Path, inputs: Inputs) -> None:
    """A results file, upgraded by the schema's reader."""
    try:
        record = read_results(path)
    except UserError as e:
        raise UnreadableResults(str(e)) from None
    item = ResultsItem(path, record, _run_for(path.parent, inputs))
    _check_same_model("results file", path, (item.record.model, item.record.dataset), item.run)
    inputs.results.append(item)


def _add_analysis(path: Path, data: dict, inputs: Inputs) -> None:
    run = _run_for(path.parent, inputs)
    checkpoint = data.get("checkpoint")
    if run is None and checkpoint and run_directory(checkpoint).is_dir():
        run = _run_for(run_directory(checkpoint), inputs)  # an analysis written elsewhere names its run
    _check_same_model("analysis", path, (data.get("model"), data.get("dataset")), run)
    rows = _read_rows(path.parent / data.get("per_sample", "per_sample.csv"))
    inputs.analyses.append(AnalysisItem(path, data, run, rows=rows))


def _add_file(path: Path, data: dict, kind: str, inputs: Inputs) -> None:
    if kind == "results":
        _add_results(path, inputs)
    else:
        _add_analysis(path, data, inputs)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def collect(paths: list[Path]) -> Inputs:
    """Results files, analyses and runs from explicit files and from directories (searched MAX_DEPTH deep)."""
    if not paths:
        raise UserError("give at least one results file, run directory or analysis directory")
    inputs = Inputs()
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"input '{path}' does not exist")
        if path.is_file():
            data = _load_json(path)
            kind = _kind(data)
            if data is None or kind is None:
                raise UserError(f"'{path}' is not a spikeguard results or analysis file")
            if path.resolve() not in seen:
                seen.add(path.resolve())
                _add_file(path, data, kind, inputs)
            continue
        found = _scan_dir(path, inputs, seen)
        if not found:
            raise UserError(f"'{path}' holds no results file, analysis or run directory")
    _name_everything(inputs)
    return inputs


def _scan_dir(root: Path, inputs: Inputs, seen: set[Path]) -> bool:
    found = False
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "figures" and depth < MAX_DEPTH)
        here = Path(folder)
        if _is_run(here):
            _run_for(here, inputs)
            found = True
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            path = here / name
            if path.resolve() in seen:  # already taken in through another input (a run holds its analysis)
                found = True
                continue
            data = _load_json(path)
            kind = _kind(data)
            if data is None or kind is None:
                if name.startswith("results") or name == "analysis.json":
                    inputs.ignored.append(f"{path} (not in the results or analysis schema)")
                continue
            seen.add(path.resolve())
            try:
                _add_file(path, data, kind, inputs)
            except UnreadableResults as e:  # found by searching, not named: listed as ignored
                inputs.ignored.append(str(e))
                continue
            found = True
    return found


def _name_everything(inputs: Inputs) -> None:
    """Short unique labels: a run's defense (and lambda), with its directory where two would collide."""
    base = {key: label_for(run.config, run.path) for key, run in inputs.runs.items()}
    counts: dict[str, int] = {}
    for label in base.values():
        counts[label] = counts.get(label, 0) + 1
    for key, run in inputs.runs.items():
        run.label = base[key] if counts[base[key]] == 1 else f"{base[key]} [{run.path.name}]"
    for results in inputs.results:
        results.label = results.run.label if results.run else results.path.parent.name or results.path.stem
    for analysis in inputs.analyses:
        analysis.label = (analysis.run.label if analysis.run else analysis.data.get("label")
                          or analysis.data.get("defense") or analysis.path.parent.name or analysis.path.stem)
