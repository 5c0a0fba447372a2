"""A study's cells grouped by their settings other than the seed, and the numbers a summary reads from them:
each cell's numbers flattened to one level of names, the mean and 95% interval over a group's seeds, and the
trade-off figure across lambda (spikeguard/study/summary.py and mechanism_summary.py build on these)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeguard.figures import TradeOffLine, trade_offs
from spikeguard.report.tables import ABSENT
from spikeguard.study.plan import group_key

# (key in a cell's numbers, axis label, is a fraction shown in percent)
TRADE_OFF = (("clean", "clean accuracy (%)", True), ("worst_case", "worst-case accuracy (%)", True),
             ("grad_l1", "input-gradient l1", False), ("grad_l2", "input-gradient l2", False),
             ("grad_zero_fraction", "input-gradient zeros (%)", True), ("firing_rate", "firing rate (%)", True),
             ("energy_joules", "energy per inference (J)", False))


@dataclass
class Group:
    settings: dict[str, Any]       # the cells' shared settings (no seed)
    cells: list[dict] = field(default_factory=list)  # the finished cells' study.json entries
    planned: int = 0
    constant: tuple[str, ...] = ()  # settings every group shares: left out of the label

    @property
    def label(self) -> str:
        return ", ".join(f"{k} {_text(v)}" for k, v in self.settings.items() if k not in self.constant) or "all cells"

    def values(self, key: str) -> list[float]:
        return [v for v in (flat_numbers(c["numbers"]).get(key) for c in self.cells) if v is not None]

    def by_seed(self, key: str) -> dict[Any, float]:
        return {c["settings"].get("seed", 0): flat_numbers(c["numbers"])[key] for c in self.cells
                if flat_numbers(c["numbers"]).get(key) is not None}


def flat_numbers(numbers: dict) -> dict[str, Any]:
    """One level of names: clean, worst_case, per-evaluation worst cases and paper columns, gradient
    statistics (the analysis's on the test split where there is one, else training's on a validation batch),
    firing rate, energy, and the mechanism's numbers (study/mechanism_summary.py)."""
    out = {k: v for k, v in numbers.items() if not isinstance(v, (dict, list))}
    for evaluation in numbers.get("evaluations", []):
        suite = evaluation["suite"]
        out[f"worst_case@{suite}"] = evaluation["headline"]
        out[f"clean@{suite}"] = evaluation["clean"]
        for column, value in (evaluation.get("columns") or {}).items():
            out[f"{column}@{suite}"] = value
    analysis = numbers.get("analysis") or {}
    for key in ("grad_l1", "grad_l2", "grad_zero_fraction"):
        out[key] = analysis.get(key) if analysis.get(key) is not None else numbers.get(f"train_{key}")
    for key in ("firing_rate", "energy_joules", "sops", "ann_energy_joules"):
        out[key] = analysis.get(key)
    for layer in analysis.get("layers") or []:  # per spiking layer (study/energy_summary.py)
        out[f"firing_rate:{layer['name']}"] = layer.get("firing_rate")
        out[f"sops:{layer['name']}"] = layer.get("sops")
        out[f"silent:{layer['name']}"] = layer.get("silent_fraction")
    return out | mechanism_flat(numbers)


def mean_interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95% interval); the half-width is None for fewer than two values."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def groups_of(study: dict) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for cell in study["cells"]:
        key = group_key(cell["settings"])
        group = groups.setdefault(key, Group({k: v for k, v in cell["settings"].items() if k != "seed"}))
        group.planned += 1
        if cell["status"] == "done" and cell.get("numbers"):
            group.cells.append(cell)
    values: dict[str, set[str]] = {}
    for group in groups.values():
        for name, value in group.settings.items():
            values.setdefault(name, set()).add(json.dumps(value))
    constant = tuple(k for k, seen in values.items()  # in every group, with one value
                     if len(seen) == 1 and len(groups) > 1 and all(k in g.settings for g in groups.values()))
    for group in groups.values():
        group.constant = constant
    return list(groups.values())


def other_settings(group: Group) -> dict[str, Any]:
    """A group's settings other than the defense and the settings only a defense reads (lamb, gr_lamb, ...):
    what a comparison with vanilla must hold equal (the network, the training estimator, the data set)."""
    from spikeguard.defenses.registry import DEFENSE_SETTINGS

    return {k: v for k, v in group.settings.items() if k not in ("defense", "rat_beta", *DEFENSE_SETTINGS)}


def matching_vanilla(group: Group, groups: list[Group]) -> Group | None:
    """The finished vanilla group with the same other settings (not an ensemble), or None."""
    return next((g for g in groups if g.settings.get("defense") == "vanilla" and g.cells and g is not group
                 and "ensemble" not in g.settings and other_settings(g) == other_settings(group)), None)


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def cell_text(values: list[float], percent: bool, fmt: str = ".3g") -> str:
    """"mean ± half-width (n)" for the seeds that finished; one seed shows no interval."""
    if not values:
        return ABSENT
    mean, half = mean_interval(values)
    scale = 100 if percent else 1
    show = (lambda v: f"{scale * v:.1f}") if percent else (lambda v: format(v, fmt))
    return f"{show(mean)} ± {show(half)} (n={len(values)})" if half is not None else f"{show(mean)} (n=1)"


def mechanism_flat(numbers: dict) -> dict[str, Any]:
    """The cell's mechanism numbers under flat keys (none for a cell analysed before the mechanism existed)."""
    analysis = numbers.get("analysis") or {}
    mech = analysis.get("mechanism")
    if not mech:
        return {}
    out: dict[str, Any] = {"identity_max_relative_error": mech.get("identity_max_relative_error")}
    own = mech["training_estimator"]
    for name, points in mech["estimators"].items():
        suffix = "" if name == own else f"@{name}"
        for point, values in points.items():
            for key, stats in values.items():
                out[f"{key}@{point}{suffix}"] = stats.get("median")
                out[f"{key}@{point}{suffix}:mean"] = stats.get("mean")
    flip = mech["flip"]
    out |= {"flip_distance": flip["flip_distance"]["median"], "min_eps_adv": flip["min_eps_adv"]["median"],
            "flip_rank_correlation": flip["rank_correlation"], "flip_agreement": flip["agreement_with_attack"],
            "two_step_agreement": flip["two_step_agreement_with_attack"],
            "min_eps_agreement": flip["min_eps_agreement_with_attack"]}
    for layer, fraction in (mech.get("surrogate_zeros") or {}).get(own, {}).items():
        out[f"surrogate_zeros:{layer}"] = fraction
    gap = (analysis.get("gap") or [{}])[0]
    out["gap_ratio_f"], out["gap_ratio_margin"] = gap.get("ratio_abs"), gap.get("ratio_margin_abs")
    return out


def _trade_off_line(name: str, members: list[Group], key: str, scale: float) -> TradeOffLine:
    """A line's points over lambda and levels without lambda for one quantity, in display units."""
    with_lamb = sorted((g for g in members if "lamb" in g.settings), key=lambda g: g.settings["lamb"])
    points = [(g.settings["lamb"], *mean_interval(g.values(key))) for g in with_lamb if g.values(key)]
    levels = [mean_interval(g.values(key)) for g in members if "lamb" not in g.settings and g.values(key)]
    return TradeOffLine(name, [(x, scale * m, None if h is None else scale * h) for x, m, h in points],
                        [(scale * m, None if h is None else scale * h) for m, h in levels])


def trade_off_figure(groups: list[Group], path: Path, cols: int = 4,
                     quantities: tuple[tuple[str, str, bool], ...] = TRADE_OFF, log_y: bool = False) -> Path | None:
    """One panel per quantity (key, label, percent); x is lambda (log scale), a line per defense (and other
    grid settings)."""
    finished = [g for g in groups if g.cells]
    lines: dict[tuple, list[Group]] = {}  # one line per setting other than lambda that varies in the study
    for g in finished:
        setting = tuple((k, _text(v)) for k, v in g.settings.items() if k != "lamb" and k not in g.constant)
        lines.setdefault(setting, []).append(g)
    names = {setting: ", ".join(v for _, v in setting) or "all" for setting in lines}
    panels = {label: [_trade_off_line(names[s], members, key, 100 if percent else 1) for s, members in lines.items()]
              for key, label, percent in quantities if any(g.values(key) for g in finished)}
    if not panels:
        return None
    return trade_offs(panels, path, log_lambda=any("lamb" in g.settings for g in finished), cols=cols, log_y=log_y)
