"""The study summary's mechanism section: the decomposition df/dx = f (1 - f) dm/dx across the grid, along the
attack path and under other estimators, the flip distance against survival, the gap in margin units, the
training's penalty probe, a figure, and sentences written from the numbers (spikeguard/report/explain.py).

Each cell contributes its analysis's medians over test samples; a group shows the mean over seeds of those
medians with a 95% interval (Student t), like every other number of the summary.
"""

from __future__ import annotations

from pathlib import Path

from spikeguard.report.blocks import Block, Figure, Items, Paragraph, Table
from spikeguard.report.explain import Mechanism, mechanism_sentences
from spikeguard.report.tables import ABSENT
from spikeguard.study.groups import (
    Group,
    cell_text,
    matching_vanilla,
    mean_interval,
    mechanism_flat,
    trade_off_figure,
)

# (flat key, column label) of the clean-point decomposition under the training estimator (medians over samples)
CLEAN = (("f_l1@clean", "||df/dx||_1"), ("m_l1@clean", "||dm/dx||_1"), ("f_one_minus_f@clean", "f (1 - f)"),
         ("f@clean", "f"), ("m@clean", "m"), ("m_l1_over_l2@clean", "l1/l2"),
         ("m_effective_support@clean", "effective support (pixels)"), ("m_zero_fraction@clean", "exact zeros (%)"),
         ("f_l1@clean:mean", "||df/dx||_1 (mean)"), ("m_l1@clean:mean", "||dm/dx||_1 (mean)"))
PATH = (("f_l1@half_step", "||df/dx||_1 half step"), ("m_l1@half_step", "||dm/dx||_1 half step"),
        ("f_one_minus_f@half_step", "f (1 - f) half step"), ("f_l1@attack_end", "||df/dx||_1 attack end"),
        ("m_l1@attack_end", "||dm/dx||_1 attack end"), ("f_one_minus_f@attack_end", "f (1 - f) attack end"))
FLIP = (("flip_distance", "flip distance m/||dm/dx||_1"), ("min_eps_adv", "bisected minimal eps"),
        ("flip_rank_correlation", "rank correlation"), ("flip_agreement", "agrees with the attack (%)"),
        ("two_step_agreement", "two-step agrees (%)"), ("min_eps_agreement", "bisection agrees (%)"))
GAP = (("gap_ratio_f", "adversarial / random, f units"), ("gap_ratio_margin", "adversarial / random, margin units"))
PROBE = (("train_sr_penalty", "SR penalty (validation)"), ("train_margin_penalty", "margin finite difference"),
         ("train_grad_l1", "||df/dx||_1 (validation, mean)"), ("train_grad_margin_l1", "||dm/dx||_1 (validation, mean)"))
PERCENT = {"m_zero_fraction@clean", "flip_agreement", "two_step_agreement", "min_eps_agreement"}
FIGURE_QUANTITIES = (("m_l1@clean", "||dm/dx||_1 (margin)", False), ("f_one_minus_f@clean", "f (1 - f) (confidence)", False),
                     ("f_l1@clean", "||df/dx||_1 = f (1 - f) ||dm/dx||_1", False),
                     ("f_l1@attack_end", "||df/dx||_1 at the attack's end", False))


def _row(group: Group, columns: tuple[tuple[str, str], ...]) -> list[str]:

    return [group.label, *(cell_text(group.values(key), key in PERCENT) for key, _ in columns)]


def _table(groups: list[Group], columns: tuple[tuple[str, str], ...]) -> Table:
    return Table(["cells", *(label for _, label in columns)], [_row(g, columns) for g in groups])


def _estimator_names(groups: list[Group]) -> list[str]:
    found = {k.split("@")[-1].split(":mean")[0] for g in groups for c in g.cells
             for k in mechanism_flat(c["numbers"]) if k.startswith("m_l1@clean@")}
    return sorted(found)


def _estimator_table(groups: list[Group]) -> list[Block]:
    """||dm/dx||_1 and ||df/dx||_1 at clean points under each other estimator, and the margin's cut against
    the matching vanilla under each (vanilla's mean over its group's, so 2.0 means halved)."""
    names = _estimator_names(groups)
    if not names:
        return []

    def cut(group: Group, key: str) -> str:
        baseline = matching_vanilla(group, groups) if group.settings.get("defense") != "vanilla" else group
        if baseline is None or not baseline.values(key) or not group.values(key):
            return ABSENT
        return f"{mean_interval(baseline.values(key))[0] / mean_interval(group.values(key))[0]:.2f}x"

    header, rows = ["cells"], []
    keys = [("m_l1@clean", "training estimator")] + [(f"m_l1@clean@{n}", n) for n in names]
    for _, label in keys:
        header += [f"||dm/dx||_1, {label}", f"vanilla / this, {label}"]
    for name in names:
        header.append(f"||df/dx||_1, {name}")
    for g in groups:
        row = [g.label]
        for key, _ in keys:
            row += [cell_text(g.values(key), False), cut(g, key)]
        row += [cell_text(g.values(f"f_l1@clean@{n}"), False) for n in names]
        rows.append(row)
    return [Table(header, rows),
            Paragraph("Medians over test samples at clean points; 'vanilla / this' is how many times smaller the "
                      "margin's gradient is than vanilla's under the same estimator (the means over seeds divided).")]


def _zeros_table(groups: list[Group]) -> list[Block]:
    layers = list(dict.fromkeys(k.split(":", 1)[1] for g in groups for c in g.cells  # in model order
                                for k in mechanism_flat(c["numbers"]) if k.startswith("surrogate_zeros:")))
    if not layers:
        return []
    columns = (("m_zero_fraction@clean", "input gradient"),
               *((f"surrogate_zeros:{layer}", f"layer {layer}") for layer in layers))

    rows = [[g.label, *(cell_text(g.values(k), True) for k, _ in columns)] for g in groups]
    return [Table(["exact zeros (%)", *(label for _, label in columns)], rows),
            Paragraph("Exact zeros of the input gradient beside each spiking layer's exactly-zero surrogate "
                      "derivatives (every neuron, time step and sample of the first analysis batch, training "
                      "estimator). A compact surrogate is zero on many neurons, but each input pixel reaches many "
                      "live ones, so the input gradient is not.")]


def _sentences(groups: list[Group]) -> list[Block]:
    """Each defended group against the vanilla group of the same other settings (an ANN against the ANN)."""
    keys = ("f_l1@clean", "m_l1@clean", "f_one_minus_f@clean", "m_l1_over_l2@clean", "flip_distance")

    def medians(group: Group) -> Mechanism:
        return Mechanism(*(mean_interval(group.values(k))[0] for k in keys))

    lines = []
    for g in groups:
        baseline = matching_vanilla(g, groups) if g.settings.get("defense") != "vanilla" else None
        if baseline is None or any(not g.values(k) or not baseline.values(k) for k in keys):
            continue
        lines.append(" ".join(mechanism_sentences(medians(baseline), medians(g), baseline.label, g.label)))
    if not lines:
        return [Paragraph("No sentence about the mechanism: the study has no analysed vanilla cells to compare with.")]
    return [Items(lines)]


def mechanism_blocks(groups: list[Group], study_dir: Path, figure_path: Path) -> list[Block]:
    """The section's blocks; a study without mechanism numbers gets one paragraph saying so."""

    analysed = [g for g in groups if any(mechanism_flat(c["numbers"]) for c in g.cells)]
    if not analysed:
        return [Paragraph(f"{ABSENT}: no cell holds the mechanism's analysis (the plan has no 'analyze', or the "
                          "cells were analysed by an older spikeguard: remove their analysis/ folder and rerun).")]
    blocks: list[Block] = [
        *_sentences(analysed),
        Paragraph("At clean test points under each model's training estimator, BatchNorm in eval mode; medians over "
                  "samples, then the mean over seeds with a 95% interval. f is the true-class probability against "
                  "the strongest rival, m = z_y - z_k its logit margin, and df/dx = f (1 - f) dm/dx exactly "
                  "(largest relative error found: "
                  f"{max((v for g in analysed for v in g.values('identity_max_relative_error')), default=0.0):.1e}). "
                  "l1/l2, the effective support (l1/l2)^2 and the exact zeros are the same for f and m."),
        _table(analysed, CLEAN)]
    figure = trade_off_figure(analysed, figure_path, cols=2, quantities=FIGURE_QUANTITIES, log_y=True)
    if figure is not None:
        blocks.append(Figure(figure, "The decomposition against lambda: the margin's gradient, the confidence "
                                     "factor and their product, the gradient SR penalises (log scale; mean over "
                                     "seeds of per-model medians, 95% intervals; vanilla as a horizontal line)"))
    blocks += [Paragraph("Along the attack path: at x - (eps/2) sign(df/dx) and at the attack's end point, where "
                         "the attack works."), _table(analysed, PATH)]
    blocks += _estimator_table(analysed)
    blocks += _zeros_table(analysed)
    blocks += [_table(analysed, FLIP),
               Paragraph("Per clean-correct sample: the first-order flip distance m / ||dm/dx||_1 (medians), the "
                         "bisected minimal eps of the analysis's attack, their rank correlation, and how often "
                         "'flip distance > eps' agrees with the attack's outcome at eps; 'two-step' linearises again "
                         "at the half step (eps/2 + its flip distance)."),
               _table(analysed, GAP),
               Paragraph("The random-vs-adversarial gap: the mean drop under the attack over the mean absolute change "
                         "under uniform noise of the same eps. In f units the ratio moves with confidence (every drop "
                         "of f is scaled by f (1 - f) along the way); in margin units it does not."),
               _table(analysed, PROBE),
               Paragraph("From training, at the best epoch on the fixed validation batch, for every defense: the SR "
                         "penalty's value computed without a gradient (vanilla included), the same finite difference "
                         "on the margin, and the mean gradient norms.")]
    return blocks
