"""A study plan: a grid over training settings, and what to do with every cell of it.

```yaml
name: digits-lambda
grid:                         # any training field; a list of values, or one value
  defense: [vanilla, sr]
  lamb: [0.01, 0.03, 0.1]     # a field that does not apply to a cell (lamb for vanilla) collapses: it runs once
  seed: [0, 1, 2]
# or a list of such grids, whose cells are united (one cell once): more seeds for the main comparison only
#   grid: [{defense: [vanilla, sr], lamb: 0.03, seed: [0, 1, 2, 3, 4]}, {defense: sr, lamb: [0.01, 0.1], seed: [0, 1, 2]}]
train: {epochs: 30}           # fixed training fields
evaluate:                     # one or more evaluations; the first is the headline
  - {suite: quick, n: 360, eps: 0.15}
analyze: {eps: [0.1, 0.15], n: 100}   # optional
ensembles: [{defense: sr, lamb: 0.03}]  # optional: the cells matching each mapping (all their seeds), their
                              # logits averaged and evaluated as one model once they have all finished
# a grid point of sr_distill may name its teacher by a cell of this plan: an ensemble cell's id teaches with its
# members averaged, e.g. teacher: ensemble_defense-sr_lamb-0.03; the student trains once they have finished
reuse: [digits-lambda]        # optional: studies beside DIR whose finished cells of the same training
                              # configuration, evaluations, analysis and threads are copied, not rerun
threads: 1                    # torch threads per cell, the same under every executor
slurm: {partition: gpu, gpus_per_cell: 1, time_per_cell: 720}   # optional defaults for --executor slurm
```

Everything is checked here, before a cell runs and without PyTorch: every cell's training configuration is
resolved (so a bad lamb in cell 9 is refused before cell 1 trains), every evaluation and the analysis.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeguard.config import RENAMED, KeyLines, TrainConfig, config_from_dict, read_yaml
from spikeguard.errors import UserError

PLAN_KEYS = ("name", "grid", "train", "evaluate", "analyze", "threads", "slurm", "ensembles", "reuse")
EVALUATE_KEYS = ("suite", "n", "eps", "batch_size", "seed", "eot_draws", "threat_model", "budget", "eps_sweep")
ANALYZE_KEYS = ("eps", "n", "draws", "seed", "estimator", "eps_max", "attack_eps_max", "bisect_steps",
                "batch_size")
SLURM_KEYS = ("partition", "gpus_per_cell", "time_per_cell", "cpus_per_cell", "mem_gb", "account", "qos",
              "constraint", "setup")
TRAIN_KEYS = (*(f.name for f in dataclasses.fields(TrainConfig)), *RENAMED)  # old names still load
# Fields a study sets per cell itself, or that belong to the machine a cell runs on.
NOT_IN_PLAN = ("device",)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Cell:
    """One grid point: its directory name and the training fields it sets (over the plan's ``train``). An
    ensemble cell trains nothing: ``members`` are the cells whose models it averages (its config is the first
    member's, for the data set and the eps). A distilled student's ``teachers`` are the cells whose models
    teach it (averaged), named in its config by a cell id of the plan."""

    id: str
    settings: dict[str, Any]
    config: TrainConfig
    members: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()

    @property
    def needs(self) -> tuple[str, ...]:
        """The cells that must have finished before this one can run."""
        return self.members + self.teachers


@dataclass
class StudyPlan:
    name: str
    grid: dict[str, list] | list[dict[str, list]]
    train: dict[str, Any]
    evaluate: list[dict[str, Any]]
    analyze: dict[str, Any] | None = None
    threads: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    ensembles: list[dict[str, Any]] = field(default_factory=list)
    reuse: list[str] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The plan as written to DIR/plan.yaml (cells are derived, not stored)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "cells"}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}

    def fingerprint(self) -> str:
        """What defines the study's numbers: a rerun into the same directory must have the same one. The slurm
        block and reuse are left out: where cells run, or whether an identical cell is copied from another
        study, does not change what they compute."""
        defining = {k: v for k, v in self.to_dict().items() if k not in ("slurm", "reuse")}
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise UserError(f"study '{self.name}' has no cell '{cell_id}'")


def load_plan(path: str | Path) -> StudyPlan:
    path = Path(path)
    lines: KeyLines = {}
    return plan_from_dict(read_yaml(path, "plan file", lines), str(path), base=path.parent, lines=lines)


def plan_from_dict(raw: Any, where: str = "plan", base: Path | None = None,
                   lines: KeyLines | None = None) -> StudyPlan:
    """The checked plan; a suite file named by a relative path is taken relative to ``base`` (the plan's
    folder) and stored absolute, so the copy in DIR/plan.yaml finds it too. ``lines`` (read_yaml's): an
    unknown key's message gives its line."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping with name, grid, train and evaluate")
    lines = lines or {}
    _no_unknown(raw, PLAN_KEYS, where, (), lines)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    if isinstance(raw.get("grid"), dict):
        _no_unknown(raw["grid"], TRAIN_KEYS, where, ("grid",), lines, "config key")
    elif isinstance(raw.get("grid"), list) and raw["grid"]:
        for number, part in enumerate(raw["grid"]):
            if isinstance(part, dict):
                _no_unknown(part, TRAIN_KEYS, where, ("grid", number), lines, "config key")
    grid = (_grid(raw.get("grid"), where) if not isinstance(raw.get("grid"), list) or not raw["grid"]
            else [_grid(part, f"{where}: grid {number}") for number, part in enumerate(raw["grid"], start=1)])
    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise UserError(f"{where}: train must be a mapping of training field: value")
    _no_unknown(train, TRAIN_KEYS, where, ("train",), lines, "config key")
    grid_keys = {key for part in grids(grid) for key in part}
    for key in (grid_keys | set(train)) & set(NOT_IN_PLAN):
        raise UserError(f"{where}: '{key}' is chosen where a cell runs (the executor), not in a plan")
    both = sorted(grid_keys & set(train))
    if both:
        raise UserError(f"{where}: {', '.join(both)} is both in grid and train; give it in one place")
    evaluate = _evaluations(raw.get("evaluate"), where, base, lines)
    analyze = _analysis(raw.get("analyze"), where, lines)
    threads = raw.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 256:
        raise UserError(f"{where}: threads must be an integer in [1, 256], got {threads!r}")
    slurm = _slurm(raw.get("slurm"), where, lines)
    ensembles = _ensemble_selectors(raw.get("ensembles"), where, lines)
    reuse = raw.get("reuse") or []
    if not isinstance(reuse, list) or not all(isinstance(r, str) and NAME.fullmatch(r) for r in reuse):
        raise UserError(f"{where}: reuse must list study names (folders beside the study's), got {reuse!r}")
    plan = StudyPlan(name, grid, dict(train), evaluate, analyze, threads, slurm, ensembles, list(reuse))
    cells = expand(plan)
    plan.cells = taught(cells + ensemble_cells(ensembles, cells, where), where)
    return plan


def _no_unknown(mapping: dict, allowed: tuple[str, ...], where: str, path: tuple = (),
                lines: KeyLines | None = None, kind: str = "key") -> None:
    """Refuse keys not in ``allowed``: each named with its line in the file (``lines``, at ``path``) and the
    closest allowed key ("did you mean ...")."""
    unknown = sorted(str(k) for k in mapping if str(k) not in allowed)
    if unknown:
        named = ", ".join(_pointed(key, allowed, (*path, key), lines or {}) for key in unknown)
        shown = [k for k in allowed if k not in RENAMED]  # an old name is accepted, not offered
        raise UserError(f"{where}: unknown {kind}(s) {named}; allowed: {', '.join(shown)}")


def _pointed(key: str, allowed: tuple[str, ...], path: tuple, lines: KeyLines) -> str:
    """``key`` with where it is and what was probably meant: "sutie (line 6: did you mean 'suite'?)"."""
    close = difflib.get_close_matches(key, [k for k in allowed if k not in RENAMED], n=1)
    hints = [f"line {lines[path]}"] if path in lines else []
    hints += [f"did you mean '{close[0]}'?"] if close else []
    return f"{key} ({': '.join(hints)})" if hints else key


def _grid(grid: Any, where: str) -> dict[str, list]:
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{where}: grid must be a mapping of training field: [values], e.g. defense: [vanilla, sr]")
    out = {}
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise UserError(f"{where}: grid.{key} lists no values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise UserError(f"{where}: grid.{key} repeats a value")
        out[str(key)] = values
    config_from_dict({k: v[0] for k, v in out.items()})  # names the unknown field or the wrong type
    return out


def _evaluations(value: Any, where: str, base: Path | None, lines: KeyLines) -> list[dict[str, Any]]:
    from spikeguard.evaluation.config import EvalConfig, available_suites

    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise UserError(f"{where}: evaluate must list at least one evaluation, e.g. - {{suite: quick, n: 360}}")
    out = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "suite" not in item:
            raise UserError(f"{where}: evaluation {number} must be a mapping with a suite")
        _no_unknown(item, EVALUATE_KEYS, f"{where}: evaluation {number}",
                    ("evaluate", number - 1) if isinstance(value, list) else ("evaluate",), lines)
        item = dict(item)
        suite = str(item["suite"])
        if suite not in available_suites() and base is not None and not Path(suite).is_absolute():
            item["suite"] = str((base / suite).resolve())
        EvalConfig(**item).validated()  # suite exists, eps, n and the rest in range
        out.append(dict(item))
    return out


def _analysis(value: Any, where: str, lines: KeyLines) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"{where}: analyze must be a mapping, e.g. {{eps: [0.1], n: 100}}")
    _no_unknown(value, ANALYZE_KEYS, f"{where}: analyze", ("analyze",), lines)
    from spikeguard.config import check_linf_eps, coerce_field

    eps = value.get("eps")
    for e in (eps if isinstance(eps, list) else [eps] if eps is not None else []):
        check_linf_eps(coerce_field("analyze.eps", e, "float"))
    for key in ("n", "draws", "bisect_steps", "batch_size"):
        if key in value and not (isinstance(value[key], int) and not isinstance(value[key], bool) and value[key] > 0):
            raise UserError(f"{where}: analyze.{key} must be a positive integer, got {value[key]!r}")
    return dict(value)


def _slurm(value: Any, where: str, lines: KeyLines) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: slurm must be a mapping, e.g. {{partition: gpu, gpus_per_cell: 1}}")
    _no_unknown(value, SLURM_KEYS, f"{where}: slurm", ("slurm",), lines)
    return dict(value)


def grids(grid: dict[str, list] | list[dict[str, list]]) -> list[dict[str, list]]:
    """The plan's grid as a list of grids (one mapping is a list of one)."""
    return grid if isinstance(grid, list) else [grid]


def _ensemble_selectors(value: Any, where: str, lines: KeyLines) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) and v for v in value):
        raise UserError(f"{where}: ensembles must list mappings of settings, e.g. [{{defense: sr, lamb: 0.03}}]")
    for number, selector in enumerate(value):
        _no_unknown(selector, TRAIN_KEYS, f"{where}: ensemble {number + 1}", ("ensembles", number), lines,
                    "config key")
        if "seed" in selector:
            raise UserError(f"{where}: ensemble {number + 1} names a seed; an ensemble averages over its cells' seeds")
    return [dict(v) for v in value]


def ensemble_cells(selectors: list[dict[str, Any]], cells: list[Cell], where: str) -> list[Cell]:
    """One cell per selector: the grid's cells whose settings hold all of the selector's values; they must be
    two or more and differ in their seed only, so that the ensemble is one recipe trained several times."""
    out: list[Cell] = []
    for number, selector in enumerate(selectors, start=1):
        def same(value: Any, wanted: Any) -> bool:
            return json.dumps(value, sort_keys=True) == json.dumps(wanted, sort_keys=True)

        members = [c for c in cells if not c.members and all(k in c.settings and same(c.settings[k], v)
                                                             for k, v in selector.items())]
        if len(members) < 2:
            raise UserError(f"{where}: ensemble {number} ({_describe(selector)}) matches {len(members)} cell(s); "
                            "it needs two or more")
        recipes = {json.dumps({k: v for k, v in c.config.to_record().items() if k != "seed"}, sort_keys=True)
                   for c in members}
        if len(recipes) > 1:
            raise UserError(f"{where}: ensemble {number} ({_describe(selector)}) matches cells that differ in more "
                            "than their seed; name the settings that tell them apart")
        out.append(Cell(f"ensemble_{cell_name(selector)}", {**selector, "ensemble": len(members)}, members[0].config,
                        tuple(c.id for c in members)))
    return out


def taught(cells: list[Cell], where: str) -> list[Cell]:
    """Each sr_distill cell whose teacher names cells of the plan, with those cells as its ``teachers``: an
    ensemble cell stands for its members. A teacher given as paths (checkpoints outside the study) is left to
    training to check."""
    by_id = {c.id: c for c in cells}
    out = []
    for cell in cells:
        named = [t for t in (cell.config.teacher or []) if t in by_id] if cell.config.applies("teacher") else []
        if not named:
            out.append(cell)
            continue
        if len(named) != len(cell.config.teacher or []):
            raise UserError(f"{where}: cell {cell.id}: teacher mixes cells of the plan with paths; give one or "
                            "the other")
        ids: list[str] = []
        for teacher in named:
            if by_id[teacher].teachers or by_id[teacher].config.applies("teacher"):
                raise UserError(f"{where}: cell {cell.id}: teacher '{teacher}' is itself a distilled student")
            ids += by_id[teacher].members or [teacher]
        out.append(dataclasses.replace(cell, teachers=tuple(dict.fromkeys(ids))))
    return out


def expand(plan: StudyPlan) -> list[Cell]:
    """Every grid point as a cell, grid after grid; a field that does not apply to a point (lamb for vanilla,
    the training estimator or T for an ANN) is dropped from it, from the grid and from ``train`` alike, so the
    points that differ only in it are one cell (also across grids). A cell is named by the fields that vary
    over the whole plan."""
    cells: dict[str, Cell] = {}
    parts = grids(plan.grid)
    values_of: dict[str, set[str]] = {}
    for part in parts:
        for key, values in part.items():
            values_of.setdefault(key, set()).update(json.dumps(v, sort_keys=True) for v in values)
    varying = [k for k in values_of if len(values_of[k]) > 1 or any(k not in part for part in parts)]
    points = (dict(zip(part, values)) for part in parts for values in itertools.product(*part.values()))
    for point in ({k: p[k] for k in values_of if k in p} for p in points):  # one key order: one name per cell
        values_all = {**plan.train, **point}
        probe = config_from_dict(values_all)
        settings = {k: v for k, v in point.items() if probe.applies(k)}
        values_used = {k: v for k, v in {**plan.train, **settings}.items() if probe.applies(k)}
        try:
            config = config_from_dict(values_used).resolved()
        except UserError as e:
            raise UserError(f"cell {_describe(settings)}: {e}") from None
        cell_id = cell_name({k: v for k, v in settings.items() if k in varying} or settings)
        if cell_id in cells:
            if cells[cell_id].settings != settings:
                raise UserError(f"two cells would share the directory '{cell_id}'; give values that differ "
                                "after reducing to letters, digits, '.', '_' and '-'")
            continue
        cells[cell_id] = Cell(cell_id, settings, config)
    return list(cells.values())


def cell_name(settings: dict[str, Any]) -> str:
    """``{"defense": "sr", "lamb": 0.03, "seed": 0}`` -> ``defense-sr_lamb-0.03_seed-0``."""
    parts = [f"{key}-{_text(value)}" for key, value in settings.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts)) or "cell"


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_text(v)}" for k, v in settings.items()) or "(the only cell)"


def group_key(settings: dict[str, Any]) -> tuple:
    """Cells that differ only in their seed form one group (one row of the aggregated tables); an ensemble,
    whose settings name its size, is a group of its own."""
    return tuple((k, json.dumps(v)) for k, v in settings.items() if k != "seed")
