"""Every figure spikeguard draws (PNG): analyses, training runs, reports and a study's trade-offs. Drawn with
matplotlib's object API on the Agg canvas, chosen here once (no pyplot: no global figure state, no backend
switch, no display needed) and written through the atomic writer.

Each function takes plain data keyed by a label and writes one file; ``write_figures`` writes every
figure of an analysis or report it has data for and returns their paths.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spikeguard.files import write_bytes

FIGURE_FILES = {
    "comparison": "comparison.png",
    "accuracy_vs_eps": "accuracy_vs_eps.png",
    "gradient_sparsity": "gradient_sparsity.png",
    "ratio_vs_sparsity": "ratio_vs_sparsity.png",
    "firing_rates": "firing_rates.png",
    "training_curves": "training_curves.png",
}


def _new(ncols: int = 1, nrows: int = 1, size=(6.4, 4.2), layout: Literal["constrained", "tight"] = "constrained"):
    fig = Figure(figsize=size, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _legend(ax, fontsize: int = 7) -> None:
    """A legend only where something is labelled (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize)


def _save(fig: Figure, path: Path) -> Path:
    """The PNG, rendered in memory first and then written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes(path, buf.getvalue())
    return path


def accuracy_vs_eps(analyses: dict[str, dict], path: Path,
                    evaluator_points: dict[str, list[tuple[float, float, str]]] | None = None) -> Path:
    """Accuracy against eps under the attack, uniform noise (mean and worst over draws) and random signs,
    one colour per model; the evaluator's ensemble accuracies (label -> [(eps, accuracy, suite)]) as marks."""
    fig, axes = _new()
    ax = axes[0][0]
    colours: dict[str, str] = {}
    for i, (label, a) in enumerate(analyses.items()):
        colour = colours.setdefault(label, f"C{i % 10}")
        rows = a.get("per_eps", [])
        if not rows:
            continue
        eps = [0.0] + [r["eps"] for r in rows]
        clean = rows[0]["accuracy_clean"]
        for key, style, what in (("accuracy_adv", "-o", "attack"), ("accuracy_rand", "--", "uniform noise"),
                                 ("accuracy_rand_worst", ":", "uniform, worst draw"),
                                 ("accuracy_sign", "-.", "random signs")):
            ax.plot(eps, [clean] + [r[key] for r in rows], style, color=colour, label=f"{label}: {what}")
    for i, (label, points) in enumerate((evaluator_points or {}).items()):
        colour = colours.get(label, f"C{(len(colours) + i) % 10}")
        for at, acc, suite in points:
            ax.plot([at], [acc], "x", color=colour, markersize=9, label=f"{label}: evaluator ({suite})")
    ax.set_xlabel("eps (l-inf, pixel scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy under attack and under random noise")
    _legend(ax, 6)
    return _save(fig, path)


def _per_sample(rows: list[dict], key: str) -> list[float]:
    """One value per sample (rows repeat per eps; CSV rows hold strings)."""
    seen, values = set(), []
    for r in rows:
        if r["index"] not in seen:
            seen.add(r["index"])
            values.append(float(r[key]))
    return values


def gradient_sparsity(per_sample: dict[str, list[dict]], path: Path, tolerance: float | None = None) -> Path:
    """Histograms over samples of the fraction of exactly-zero and of small input-gradient entries, and
    of the effective support (||g||_1 / ||g||_2)^2 (a scale-free count of the entries that matter)."""
    fig, axes = _new(ncols=3, size=(12, 3.8))
    bins = [i / 20 for i in range(21)]
    for i, (label, rows) in enumerate(per_sample.items()):
        colour = f"C{i % 10}"
        for ax, key in zip(axes[0], ("grad_zero_fraction", "grad_small_fraction")):
            ax.hist(_per_sample(rows, key), bins=bins, histtype="step", linewidth=1.6, color=colour, label=label)
        if rows and "grad_effective_support" in rows[0]:
            axes[0][2].hist(_per_sample(rows, "grad_effective_support"), bins=20, histtype="step", linewidth=1.6,
                            color=colour, label=label)
    axes[0][0].set_xlabel("fraction of exact zeros in df/dx")
    small = f"|g_i| <= {tolerance:g} max|g|" if tolerance is not None else "small entries"
    axes[0][1].set_xlabel(f"fraction with {small}")
    axes[0][2].set_xlabel("effective support (||g||_1 / ||g||_2)^2")
    for ax in axes[0]:
        ax.set_ylabel("samples")
        _legend(ax)
    fig.suptitle("Input-gradient sparsity per sample")
    return _save(fig, path)


def ratio_vs_sparsity(analyses: dict[str, dict], path: Path) -> Path:
    """Measured rho_adv / mean |change| under uniform noise against the input gradient's effective support
    (||g||_1 / ||g||_2)^2 (its l0 count for analyses without it), one point per (model, eps), with the
    first-order bracket of the same ratio (docs/theory.md, 5) as a capped vertical line. The x axis starts
    at 0, so one model is a point in a readable range, not one bar filling the plot."""
    fig, axes = _new()
    ax = axes[0][0]
    supports = []
    for i, (label, a) in enumerate(analyses.items()):
        grad = a.get("gradient", {})
        support = grad.get("effective_support", grad.get("l0"))
        if support is None:
            continue
        supports.append(support)
        colour = f"C{i % 10}"
        bracket = grad.get("first_order_ratio_abs")
        if bracket:
            ax.plot([support, support], bracket, "-_", color=colour, alpha=0.6, linewidth=2, markersize=14,
                    markeredgewidth=2, label=f"{label}: first-order bracket")
        for r in a.get("per_eps", []):
            if r.get("ratio_abs") is not None:
                ax.plot([support], [r["ratio_abs"]], "o", color=colour, markersize=7)
                ax.annotate(f"{label}, eps {r['eps']:g}", (support, r["ratio_abs"]), fontsize=8,
                            xytext=(6, 2), textcoords="offset points")
    if supports:
        ax.set_xlim(0, max(supports) * 1.4 or 1.0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("effective support (||g||_1 / ||g||_2)^2 of df/dx, mean over samples")
    ax.set_ylabel("rho_adv / mean |change| under uniform noise")
    ax.set_title("Adversarial-to-random ratio against gradient sparsity")
    _legend(ax, 8)
    return _save(fig, path)


def firing_rates(analyses: dict[str, dict], path: Path) -> Path:
    """Firing rate per spiking layer, one bar per model."""
    fig, axes = _new(size=(7, 4))
    ax = axes[0][0]
    models = [(label, a["layers"]) for label, a in analyses.items() if a.get("layers")]
    width = 0.8 / max(len(models), 1)
    names: list[str] = []
    for i, (label, layers) in enumerate(models):
        for j, layer in enumerate(layers):
            if j >= len(names):
                names.append(layer["name"])
        ax.bar([j + i * width for j in range(len(layers))], [layer["firing_rate"] for layer in layers], width,
               label=label, color=f"C{i % 10}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, fontsize=7, ha="right")
    ax.set_ylabel("spikes per neuron per time step")
    ax.set_title("Firing rate per spiking layer")
    _legend(ax)
    return _save(fig, path)


def training_curves(metrics: dict[str, list[dict]], path: Path) -> Path:
    """Validation accuracy, training loss, and the input gradient's l1 norm and zero fraction per epoch."""
    return _save(training_figure(metrics), path)


def training_figure(metrics: dict[str, list[dict]]) -> Figure:
    """The training-curves figure: whole-number epoch ticks; a panel that is zero throughout says so on a
    0-to-1 axis instead of drawing a flat line on a +-0.04 one."""
    fig, axes = _new(ncols=2, nrows=2, size=(9, 6))
    panels = (("val_accuracy", "validation accuracy"), ("loss", "training loss"),
              ("grad_l1", "mean ||df/dx||_1 (validation batch)"), ("grad_zero_fraction", "zero fraction of df/dx"))
    for ax, (key, title) in zip([a for row in axes for a in row], panels):
        values: list[float] = []
        for i, (label, records) in enumerate(metrics.items()):
            points = [(r["epoch"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), "-o", markersize=3, color=f"C{i % 10}", label=label)
                values += [v for _, v in points]
        if values and all(v == 0 for v in values):  # not a flat line on a +-0.04 axis: say it is zero
            ax.set_ylim(-0.05, 1.0)
            ax.text(0.5, 0.5, "0 at every epoch", transform=ax.transAxes, ha="center", color="0.4")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        _legend(ax)
    return fig


def comparison(models: dict[str, dict[str, float]], path: Path) -> Path:
    """Clean and worst-case accuracy per model (label -> {"clean": a, "worst case": b}), side by side."""
    labels = list(models)
    fig, axes = _new(size=(7, 1.2 + 0.55 * len(labels)))
    ax = axes[0][0]
    rows = range(len(labels))
    for offset, key, colour in ((-0.2, "clean", "0.7"), (0.2, "worst case", "C3")):
        values = [100 * models[m][key] for m in labels]
        bars = ax.barh([r + offset for r in rows], values, 0.4, color=colour, label=key)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_yticks(list(rows), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("accuracy (%)")
    ax.set_title("Clean and worst-case accuracy")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


@dataclass(frozen=True)
class TradeOffLine:
    """One line of a trade-off panel (a defense and its other settings): (lambda, mean, 95% half-width or None)
    points, and (mean, half-width) levels of settings without lambda, drawn as horizontal lines and bands."""
    name: str
    points: list[tuple[float, float, float | None]]
    levels: list[tuple[float, float | None]]


def _trade_off_panel(ax, title: str, lines: list[TradeOffLine], log_lambda: bool, log_y: bool = False) -> None:
    """Lines are coloured by their place in ``lines``: the same colour for a line in every panel."""
    for number, line in enumerate(lines):
        color = f"C{number % 10}"
        if line.points:
            xs, means, halves = zip(*line.points)
            ax.errorbar(xs, means, yerr=[h or 0 for h in halves], marker="o", capsize=3, color=color,
                        label=line.name)
        for mean, half in line.levels:
            ax.axhline(mean, color=color, linestyle="--", label=line.name)
            if half:
                ax.axhspan(mean - half, mean + half, color=color, alpha=0.15)
    if log_lambda:
        ax.set_xscale("log")
        ax.set_xlabel("lambda")
    if log_y:  # quantities that move by factors (the mechanism's decomposition)
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def trade_offs(panels: dict[str, list[TradeOffLine]], path: Path, log_lambda: bool, cols: int = 4,
               log_y: bool = False) -> Path:
    """One panel per quantity (title -> its lines), x is lambda (log scale where ``log_lambda``); one legend
    for the figure, taken from the first panel."""
    rows = math.ceil(len(panels) / cols)
    fig, axes = _new(ncols=cols, nrows=rows, size=(4.2 * cols, 3.2 * rows), layout="tight")
    flat = [ax for row in axes for ax in row]
    for ax, (title, lines) in zip(flat, panels.items()):
        _trade_off_panel(ax, title, lines, log_lambda, log_y)
    for ax in flat[len(panels):]:
        ax.axis("off")
    handles, names = flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower right", fontsize=9)
    return _save(fig, path)


def write_figures(analyses: dict[str, dict], per_sample: dict[str, list[dict]], metrics: dict[str, list[dict]],
                  folder: Path, evaluator_points: dict[str, list[tuple[float, float, str]]] | None = None,
                  compared: dict[str, dict[str, float]] | None = None) -> dict[str, Path]:
    """Every figure there is data for, into ``folder``; {figure name: path}. ``compared``: clean and worst
    case per model, for the comparison chart."""
    folder = Path(folder)
    paths: dict[str, Path] = {}
    if compared:
        paths["comparison"] = comparison(compared, folder / FIGURE_FILES["comparison"])
    if any(a.get("per_eps") for a in analyses.values()) or evaluator_points:
        paths["accuracy_vs_eps"] = accuracy_vs_eps(analyses, folder / FIGURE_FILES["accuracy_vs_eps"],
                                                   evaluator_points)
    if any(per_sample.values()):
        tolerance = next((a["gradient"].get("tolerance") for a in analyses.values() if a.get("gradient")), None)
        paths["gradient_sparsity"] = gradient_sparsity({k: v for k, v in per_sample.items() if v},
                                                       folder / FIGURE_FILES["gradient_sparsity"], tolerance)
    if any(a.get("gradient") for a in analyses.values()):
        paths["ratio_vs_sparsity"] = ratio_vs_sparsity(analyses, folder / FIGURE_FILES["ratio_vs_sparsity"])
    if any(a.get("layers") for a in analyses.values()):
        paths["firing_rates"] = firing_rates(analyses, folder / FIGURE_FILES["firing_rates"])
    if any(metrics.values()):
        paths["training_curves"] = training_curves({k: v for k, v in metrics.items() if v},
                                                   folder / FIGURE_FILES["training_curves"])
    return paths


@dataclass(frozen=True)
class EnergyPoint:
    """A group of a study: its energy per inference and worst-case accuracy (mean, 95% half-width or None), and
    its per-layer firing rates (layer -> mean, half-width)."""
    name: str
    energy: tuple[float, float | None]
    robust: tuple[float, float | None]
    layers: dict[str, tuple[float, float | None]]


def robustness_per_energy(points: list[EnergyPoint], path: Path, energy_label: str) -> Path:
    """Left: worst-case accuracy against energy per inference, one point per group with both intervals. Right:
    the firing rate per spiking layer, one bar per group."""
    fig, axes = _new(ncols=2, size=(11, 4.2))
    left, right = axes[0]
    for number, p in enumerate(points):
        left.errorbar([p.energy[0]], [p.robust[0]], xerr=[p.energy[1] or 0], yerr=[p.robust[1] or 0], marker="o",
                      capsize=3, color=f"C{number % 10}", label=p.name)
    left.set_xlabel(energy_label)
    left.set_ylabel("worst-case accuracy (%)")
    left.set_title("Robustness against energy per inference", fontsize=10)
    left.grid(alpha=0.3)
    _legend(left)
    layers = list(dict.fromkeys(name for p in points for name in p.layers))
    width = 0.8 / max(len(points), 1)
    for number, p in enumerate(points):
        means = [p.layers.get(name, (0.0, None))[0] for name in layers]
        halves = [p.layers.get(name, (0.0, None))[1] or 0 for name in layers]
        right.bar([j + number * width for j in range(len(layers))], means, width, yerr=halves, capsize=2,
                  color=f"C{number % 10}", label=p.name)
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers, rotation=30, fontsize=7, ha="right")
    right.set_ylabel("firing rate (%)")
    right.set_title("Firing rate per spiking layer", fontsize=10)
    right.grid(alpha=0.3, axis="y")
    return _save(fig, path)


@dataclass(frozen=True)
class EstimatorLine:
    """One group of a study: its mean accuracy (%) under each estimator of the bank, its training estimator and
    its headline worst case (%)."""
    name: str
    accuracies: dict[str, float]
    own: str
    worst: float | None


def estimator_bank(lines: list[EstimatorLine], path: Path) -> Path:
    """Accuracy under each backward estimator, strongest (lowest over the groups' mean) on the left, one line per
    group; its training estimator ringed and its worst case over every attack a dashed line of its colour."""
    names = sorted({n for line in lines for n in line.accuracies},
                   key=lambda n: (sum(line.accuracies.get(n, 100.0) for line in lines), n))
    fig, axes = _new(size=(11, 4.4))
    ax = axes[0][0]
    for number, line in enumerate(lines):
        color = f"C{number % 10}"
        xs = [j for j, n in enumerate(names) if n in line.accuracies]
        ax.plot(xs, [line.accuracies[names[j]] for j in xs], marker="o", markersize=3, color=color, label=line.name)
        if line.own in names and line.own in line.accuracies:
            ax.scatter([names.index(line.own)], [line.accuracies[line.own]], s=120, facecolors="none",
                       edgecolors=color, linewidths=1.5)
        if line.worst is not None:
            ax.axhline(line.worst, color=color, linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy under each backward estimator (ringed: the training estimator; dashed: worst case "
                 "over every attack)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)
