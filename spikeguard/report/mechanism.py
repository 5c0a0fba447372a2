"""The report's mechanism table for analyses (``spikeguard analyze``'s ``mechanism`` block): per model,
estimator and point, the medians of ||df/dx||_1, ||dm/dx||_1 and f (1 - f) (df/dx = f (1 - f) dm/dx), l1/l2
and the flip distance; the flip distance against the attack; and, where a vanilla analysis is among the
inputs, what changes from it to each other model, in sentences written from these numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spikeguard.report.blocks import Block, Items, Paragraph, Table
from spikeguard.report.explain import Mechanism, mechanism_sentences
from spikeguard.report.tables import ABSENT, num, pct

if TYPE_CHECKING:
    from spikeguard.report.collect import AnalysisItem


def _median(values: dict, key: str) -> float | None:
    return (values.get(key) or {}).get("median")


def _rows(item: AnalysisItem) -> list[list[str]]:
    mech = item.data["mechanism"]
    rows = []
    for name, points in mech["estimators"].items():
        for point, values in points.items():
            rows.append([item.label, name, point, num(_median(values, "f_l1")), num(_median(values, "m_l1")),
                         num(_median(values, "f_one_minus_f")), num(_median(values, "m_l1_over_l2")),
                         num(_median(values, "flip_distance")), pct(_median(values, "m_zero_fraction")),
                         num(values["identity"]["max_relative_error"], ".1e")])
    return rows


def _flip_row(item: AnalysisItem) -> list[str]:
    flip = item.data["mechanism"]["flip"]
    return [item.label, str(flip["samples"]), num(flip["flip_distance"]["median"]), num(flip["min_eps_adv"]["median"]),
            num(flip["rank_correlation"], ".2f"), pct(flip["agreement_with_attack"]),
            pct(flip["two_step_agreement_with_attack"])]


def own_medians(data: dict) -> Mechanism | None:
    mech = data["mechanism"]
    clean = mech["estimators"][mech["training_estimator"]]["clean"]
    return Mechanism.from_medians({k: clean[k]["median"] for k in
                                   ("f_l1", "m_l1", "f_one_minus_f", "m_l1_over_l2", "flip_distance")})


def mechanism_blocks(items: list[AnalysisItem]) -> list[Block]:
    analysed = [item for item in items if item.data.get("mechanism")]
    if not analysed:
        return []
    blocks: list[Block] = []
    baseline = next((item for item in analysed if item.data.get("defense") == "vanilla"), None)
    if baseline is not None:
        base = own_medians(baseline.data)
        pairs = [(item, own_medians(item.data)) for item in analysed if item is not baseline]
        lines = [" ".join(mechanism_sentences(base, other, baseline.label, item.label))
                 for item, other in pairs if base is not None and other is not None]
        if lines:
            blocks.append(Items(lines))
    blocks += [
        Paragraph("The decomposition df/dx = f (1 - f) dm/dx (m the logit margin): medians over the analysed samples "
                  "at the clean point, halfway along the attack's first step and at the attack's end, under each "
                  "estimator, BatchNorm in eval mode (docs/theory.md). l1/l2 and zeros are those of both gradients."),
        Table(["model", "estimator", "point", "||df/dx||_1", "||dm/dx||_1", "f (1 - f)", "l1/l2", "flip distance",
               "exact zeros (%)", "identity error"], [row for item in analysed for row in _rows(item)]),
        Paragraph("Flip distance m / ||dm/dx||_1 against the attack (clean-correct samples, medians):"),
        Table(["model", "samples", "flip distance", "bisected minimal eps", "rank correlation",
               "agrees with the attack (%)", "two-step agrees (%)"], [_flip_row(item) for item in analysed]),
    ]
    return blocks


def margin_ratio(row: dict) -> str:
    return num(row.get("ratio_margin_abs")) if row.get("ratio_margin_abs") is not None else ABSENT
