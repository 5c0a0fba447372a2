"""The study summary's energy section: firing rates and synaptic operations per spiking layer, energy per
inference, and what robustness each defense buys for the energy it adds (docs/findings.md, question 1).

Energy per inference is the analysis's estimate (spikeguard/analysis/activity.py): accumulate operations
triggered by spikes (SOPs) at E_AC plus the multiply-accumulates of layers fed by analogue inputs at E_MAC
(45 nm figures, spikeguard/analysis/activity.py). Every number is the mean over seeds with a 95% interval; the comparisons with
vanilla pair cells by seed.
"""

from __future__ import annotations

from pathlib import Path

from spikeguard.figures import EnergyPoint, robustness_per_energy
from spikeguard.report.blocks import Block, Figure, Items, Paragraph, Table
from spikeguard.report.tables import ABSENT
from spikeguard.study.groups import Group, cell_text, matching_vanilla, mean_interval

NANO = 1e9  # joules -> nanojoules for display
MICRO = 1e6  # joules -> microjoules: worst-case points per microjoule


def layer_names(groups: list[Group]) -> list[str]:
    """The spiking layers in network order, as the analyses name them."""
    return list(dict.fromkeys(k.split(":", 1)[1] for g in groups for c in g.cells
                              for k in _flat(c) if k.startswith("firing_rate:")))


def _flat(cell: dict) -> dict:
    from spikeguard.study.groups import flat_numbers

    return flat_numbers(cell["numbers"])


def _paired(group: Group, baseline: Group, key: str, ratio: bool) -> tuple[float, float | None, int] | None:
    """Mean over the seeds both finished of this / vanilla (``ratio``) or this - vanilla, its half-width and the
    number of pairs."""
    ours, theirs = group.by_seed(key), baseline.by_seed(key)
    seeds = [s for s in ours if s in theirs and (not ratio or theirs[s])]
    if not seeds:
        return None
    values = [ours[s] / theirs[s] if ratio else ours[s] - theirs[s] for s in seeds]
    mean, half = mean_interval(values)
    return mean, half, len(seeds)


def _interval(value: tuple[float, float | None, int] | None, scale: float, unit: str) -> str:
    if value is None:
        return ABSENT
    mean, half, n = value
    if half is None:
        return f"{scale * mean:+.1f}{unit} (1 seed)" if unit != "x" else f"{mean:.2f}x (1 seed)"
    if unit == "x":
        return f"{mean:.2f}x [{mean - half:.2f}, {mean + half:.2f}] (n={n})"
    return f"{scale * mean:+.1f}{unit} [{scale * (mean - half):+.1f}, {scale * (mean + half):+.1f}] (n={n})"


def energy_blocks(groups: list[Group], figure_path: Path) -> list[Block]:
    analysed = [g for g in groups if g.values("energy_joules")]
    if not analysed:
        return [Paragraph(f"{ABSENT}: no cell holds an analysis with firing rates and energy (the plan has no "
                          "'analyze').")]
    layers = layer_names(analysed)
    rows = []
    for g in analysed:
        energy_nj = [NANO * v for v in g.values("energy_joules")]
        robust_per_uj = [100 * robust / (MICRO * energy) for robust, energy in _pairs(g, "worst_case", "energy_joules")]
        rows.append([g.label, cell_text(g.values("clean"), True), cell_text(g.values("worst_case"), True),
                     cell_text(g.values("firing_rate"), True), cell_text([v / 1e6 for v in g.values("sops")], False),
                     cell_text(energy_nj, False, ".4g"),
                     cell_text([NANO * v for v in g.values("ann_energy_joules")], False, ".4g"),
                     cell_text(robust_per_uj, False)])
    blocks: list[Block] = [Table(
        ["cells", "clean %", "worst case %", "firing rate %", "SOPs (millions)", "energy (nJ)",
         "same network as an ANN (nJ)", "worst case % per µJ"], rows)]
    lines = []
    for g in analysed:
        baseline = matching_vanilla(g, analysed) if g.settings.get("defense") != "vanilla" else None
        if baseline is None:
            continue
        energy = _paired(g, baseline, "energy_joules", ratio=True)
        robust = _paired(g, baseline, "worst_case", ratio=False)
        firing = _paired(g, baseline, "firing_rate", ratio=False)
        lines.append(f"{g.label} against {baseline.label}, paired by seed: energy per inference "
                     f"{_interval(energy, 1, 'x')}, firing rate {_interval(firing, 100, ' points')}, worst case "
                     f"{_interval(robust, 100, ' points')}.")
    if lines:
        blocks.append(Items(lines))
    if layers:
        header = ["firing rate %", *layers]
        blocks.append(Table(header, [[g.label, *(cell_text(g.values(f"firing_rate:{n}"), True) for n in layers)]
                                     for g in analysed]))
        blocks.append(Table(["SOPs per inference (thousands)", *layers],
                            [[g.label, *(cell_text([v / 1e3 for v in g.values(f"sops:{n}")], False) for n in layers)]
                             for g in analysed]))
        blocks.append(Table(["silent neurons %", *layers],
                            [[g.label, *(cell_text(g.values(f"silent:{n}"), True) for n in layers)] for g in analysed]))
    points = [EnergyPoint(g.label, _scaled(g.values("energy_joules"), NANO), _scaled(g.values("worst_case"), 100),
                          {n: _scaled(g.values(f"firing_rate:{n}"), 100) for n in layers if g.values(f"firing_rate:{n}")})
              for g in analysed if g.values("worst_case")]
    if points:
        blocks.append(Figure(robustness_per_energy(points, figure_path, "energy per inference (nJ)"),
                             "Robustness per energy: worst-case accuracy against energy per inference (left) and the "
                             "firing rate per spiking layer (right); mean over seeds, bars are 95% intervals"))
    blocks.append(Paragraph(
        "Energy per inference: SOPs (spikes times their fan-out) at E_AC per accumulate plus the analogue input "
        "layer's multiply-accumulates at E_MAC (45 nm CMOS figures: spikeguard/analysis/activity.py, "
        "docs/theory.md), on the analysis's test images; 'same network as an ANN' counts every synapse as a "
        "multiply-accumulate. Firing rate: spikes per "
        "neuron per time step; silent: neurons that never fire on those images. 'worst case % per µJ' is the "
        "headline worst-case accuracy divided by the energy, per seed: higher buys more robustness per joule."))
    return blocks


def _pairs(group: Group, a: str, b: str) -> list[tuple[float, float]]:
    out = []
    for cell in group.cells:
        flat = _flat(cell)
        if flat.get(a) is not None and flat.get(b):
            out.append((flat[a], flat[b]))
    return out


def _scaled(values: list[float], scale: float) -> tuple[float, float | None]:
    mean, half = mean_interval(values) if values else (0.0, None)
    return scale * mean, None if half is None else scale * half
