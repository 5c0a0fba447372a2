"""A study's aggregated report: DIR/summary.md, DIR/summary.html and DIR/figures/ (``spikeguard report DIR``).

Cells that differ only in their seed form a group; each number is the mean over the group's finished
seeds with a 95% confidence interval (Student t, n - 1 degrees of freedom; none for one seed). Comparisons
with vanilla pair cells by seed (same split, same initialisation stream) and give the interval of the
mean paired difference. Only finished cells count; the report says how many of each group finished.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeguard.files import write_text
from spikeguard.study.plan import group_key
from spikeguard.study.state import read_study

ABSENT = "—"
PAPER_SUITE, STRONG_SUITE = "paper", "strong"
FIGURES = "figures"
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
    firing rate, energy."""
    out = {k: v for k, v in numbers.items() if not isinstance(v, (dict, list))}
    for k, evaluation in enumerate(numbers.get("evaluations", []), start=1):
        suite = evaluation["suite"]
        out[f"worst_case@{suite}"] = evaluation["headline"]
        out[f"clean@{suite}"] = evaluation["clean"]
        for column, value in (evaluation.get("columns") or {}).items():
            out[f"{column}@{suite}"] = value
    analysis = numbers.get("analysis") or {}
    for key in ("grad_l1", "grad_l2", "grad_zero_fraction"):
        out[key] = analysis.get(key) if analysis.get(key) is not None else numbers.get(f"train_{key}")
    out["firing_rate"] = analysis.get("firing_rate")
    out["energy_joules"] = analysis.get("energy_joules")
    return out


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
    values = {}
    for group in groups.values():
        for key, value in group.settings.items():
            values.setdefault(key, set()).add(json.dumps(value))
    constant = tuple(k for k, seen in values.items() if len(seen) == 1 and len(groups) > 1)
    for group in groups.values():
        group.constant = constant
    return list(groups.values())


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


# ---- the document ---------------------------------------------------------------------------------------

def build(study_dir: Path) -> list[tuple]:
    study = read_study(study_dir)
    plan = study["plan"]
    groups = groups_of(study)
    finished = [c for c in study["cells"] if c["status"] == "done" and c.get("numbers")]
    # the suites' own names (a suite file's name field), as the results files record them
    suites = ([e["suite"] for e in finished[0]["numbers"]["evaluations"]] if finished
              else [Path(str(e["suite"])).stem for e in plan["evaluate"]])
    counts = ", ".join(f"{v} {k}" for k, v in study.get("counts", {}).items())
    blocks: list[tuple] = [
        ("h", 1, f"Study {study['name']}"),
        ("p", f"{len(study['cells'])} cells ({counts}); {study.get('threads')} torch thread(s) per cell. Numbers are "
              "means over seeds with 95% confidence intervals (Student t); accuracies in percent on the test split. "
              f"The headline worst case is that of the first evaluation (suite {suites[0]}). Cells: {study_dir / 'cells'}."),
    ]
    blocks += [("h", 2, "Verdict"), *_verdict(groups)]
    blocks += [("h", 2, "Paper-style table"), *_paper_table(groups, suites)]
    blocks += [("h", 2, "FGSM and PGD with and without SR"), *_fgsm_pgd(groups, suites)]
    blocks += [("h", 2, "Trade-offs across lambda"), *_trade_offs(groups, study_dir)]
    blocks += [("h", 2, "Cells"), *_cells(study)]
    blocks += [("h", 2, "Plan"), ("code", json.dumps(plan, indent=2))]
    return blocks


def _verdict(groups: list[Group]) -> list[tuple]:
    """Each penalised group against vanilla with the same other settings, paired by seed."""
    lines = []
    for group in groups:
        if group.settings.get("defense") in (None, "vanilla") or not group.cells:
            continue
        others = {k: v for k, v in group.settings.items() if k not in ("defense", "lamb")}
        baseline = next((g for g in groups if g.settings.get("defense") == "vanilla"
                         and {k: v for k, v in g.settings.items() if k not in ("defense", "lamb")} == others), None)
        if baseline is None or not baseline.cells:
            continue
        ours, theirs = group.by_seed("worst_case"), baseline.by_seed("worst_case")
        seeds = sorted(set(ours) & set(theirs), key=str)
        if not seeds:
            continue
        diffs = [ours[s] - theirs[s] for s in seeds]
        mean, half = mean_interval(diffs)
        if half is None:
            verdict = "one seed: no interval, no verdict"
        elif mean - half > 0:
            verdict = "better than vanilla"
        elif mean + half < 0:
            verdict = "worse than vanilla"
        else:
            verdict = "not distinguishable from vanilla"
        interval = f" [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]" if half is not None else ""
        lines.append(f"{group.label}: worst case {100 * mean:+.1f} points against vanilla{interval} over "
                     f"{len(seeds)} paired seed(s): {verdict}.")
    if not lines:
        return [("p", "No comparison with vanilla: the study has no finished vanilla cells beside other defenses.")]
    return [("list", lines), ("p", "The interval is the 95% interval of the mean difference over seeds that both "
                                   "finished (paired: the same seed gives the same split and initialisation).")]


def _paper_table(groups: list[Group], suites: list[str]) -> list[tuple]:
    """Clean, the published protocol's attacks and worst case, and the strong suite's worst case."""
    columns = _attack_columns(groups, PAPER_SUITE)
    header = ["cells", "finished", "clean", *columns, "worst case (published protocol)", "worst case (strong suite)"]
    rows = []
    for g in groups:
        rows.append([g.label, f"{len(g.cells)} of {g.planned}", cell_text(g.values("clean"), True),
                     *(cell_text(g.values(f"{c}@{PAPER_SUITE}"), True) for c in columns),
                     cell_text(g.values(f"worst_case@{PAPER_SUITE}"), True),
                     cell_text(g.values(f"worst_case@{STRONG_SUITE}"), True)])
    missing = [s for s in (PAPER_SUITE, STRONG_SUITE) if s not in suites]
    note = ("The published protocol is the `paper` suite (FGSM and PGD under the four published estimators); "
            "the strong suite adds the full estimator bank, APGD and Square: it can only be lower.")
    if missing:
        note += f" {ABSENT} in a worst-case column: the plan does not evaluate with the {' or '.join(missing)} suite."
    return [("table", header, rows), ("p", note)]


def _column_order(column: str) -> tuple:
    if column == "FGSM":
        return (0, 0)
    if column.startswith("PGD-") and column[4:].isdigit():
        return (1, int(column[4:]))
    return (2, column)


def _attack_columns(groups: list[Group], suite: str) -> list[str]:
    """The FGSM and PGD-k columns of ``suite``'s evaluations that finished cells hold."""
    found = {k.split("@")[0] for g in groups for c in g.cells for k in flat_numbers(c["numbers"])
             if k.endswith(f"@{suite}") and k.split("@")[0] not in ("worst_case", "clean")}
    return sorted(found, key=_column_order)


def _fgsm_pgd(groups: list[Group], suites: list[str]) -> list[tuple]:
    suite = next((s for s in dict.fromkeys((PAPER_SUITE, *suites)) if _attack_columns(groups, s)), None)
    if suite is None:
        return [("p", f"{ABSENT}: no evaluation of the plan runs FGSM or PGD (the paper suite does).")]
    columns = _attack_columns(groups, suite)
    rows = [[g.label, cell_text(g.values("clean"), True), *(cell_text(g.values(f"{c}@{suite}"), True) for c in columns)]
            for g in groups]
    return [("table", ["cells", "clean", *columns], rows),
            ("p", f"From the `{suite}` suite's evaluation; each attack alone on every clean-correct sample, worst "
                  "case over that suite's estimators.")]


def _trade_offs(groups: list[Group], study_dir: Path) -> list[tuple]:
    header = ["cells", *(label for _, label, _ in TRADE_OFF)]
    rows = [[g.label, *(cell_text(g.values(key), percent) for key, _, percent in TRADE_OFF)] for g in groups]
    blocks: list[tuple] = [("table", header, rows),
                           ("p", "Gradient statistics: from the analysis (test samples, the model's training estimator) "
                                 "where the plan analyses, else from training (a fixed validation batch at the best "
                                 "epoch). Firing rate and energy need the analysis.")]
    figure = trade_off_figure(groups, study_dir / FIGURES / "tradeoff.png")
    if figure is not None:
        blocks.append(("img", figure, "Trade-offs across lambda: mean over seeds, bars and bands are 95% intervals; "
                                      "defenses without lambda are horizontal lines"))
    return blocks


def trade_off_figure(groups: list[Group], path: Path) -> Path | None:
    """One panel per quantity; x is lambda (log scale), a line per defense (and other grid settings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [g for g in groups if g.cells]
    if not finished:
        return None
    lambdas = sorted({g.settings["lamb"] for g in finished if "lamb" in g.settings})
    panels = [(k, label, pct) for k, label, pct in TRADE_OFF if any(g.values(k) for g in finished)]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    lines: dict[tuple, list[Group]] = {}
    for g in finished:
        lines.setdefault(tuple((k, _text(v)) for k, v in g.settings.items() if k != "lamb" and k not in g.constant),
                         []).append(g)
    for ax, (key, label, pct) in zip(axes.flat, panels):
        scale = 100 if pct else 1
        for number, (line_key, members) in enumerate(lines.items()):
            name = ", ".join(v for _, v in line_key) or "all"
            color = f"C{number % 10}"
            with_lamb = sorted((g for g in members if "lamb" in g.settings), key=lambda g: g.settings["lamb"])
            if with_lamb and lambdas:
                points = [(g.settings["lamb"], *mean_interval(g.values(key))) for g in with_lamb if g.values(key)]
                if points:
                    xs, means, halves = zip(*points)
                    ax.errorbar(xs, [scale * m for m in means], yerr=[scale * (h or 0) for h in halves], marker="o",
                                capsize=3, color=color, label=name)
            for g in (g for g in members if "lamb" not in g.settings):
                if not g.values(key):
                    continue
                mean, half = mean_interval(g.values(key))
                ax.axhline(scale * mean, color=color, linestyle="--", label=name)
                if half:
                    ax.axhspan(scale * (mean - half), scale * (mean + half), color=color, alpha=0.15)
        if lambdas:
            ax.set_xscale("log")
            ax.set_xlabel("lambda")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower right", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cells(study: dict) -> list[tuple]:
    rows = []
    for cell in study["cells"]:
        n = cell.get("numbers") or {}
        seconds = sum((cell.get("timing") or {}).values())
        rows.append([cell["id"], cell["status"], _pct(n.get("clean")), _pct(n.get("worst_case")),
                     f"{seconds:.0f}" if seconds else ABSENT, cell.get("reason", "")])
    return [("table", ["cell", "status", "clean", "worst case", "seconds", "reason"], rows)]


def _pct(v) -> str:
    return ABSENT if v is None else f"{100 * v:.1f}"


def write_summary(study_dir: Path) -> tuple[Path, Path]:
    """DIR/summary.md and DIR/summary.html (figures embedded), after bringing study.json up to date with the
    cells' records."""
    from spikeguard.report import render_html, render_markdown

    from spikeguard.study.state import PLAN, read_plan, write_study

    study_dir = Path(study_dir)
    if (study_dir / PLAN).is_file():  # cells that ran elsewhere (Slurm jobs) since study.json was written
        write_study(study_dir, read_plan(study_dir))
    blocks = build(study_dir)
    markdown, page = study_dir / "summary.md", study_dir / "summary.html"
    write_text(markdown, render_markdown(blocks, study_dir))
    write_text(page, render_html(blocks))
    return markdown, page
