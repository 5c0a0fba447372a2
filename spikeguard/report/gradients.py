"""The report's gradient table for one results file: per gradient member, the fraction of clean-correct
samples whose input gradient is exactly zero (the gradient check) and, per spiking layer, the fraction of
exactly-zero surrogate derivatives on the probe batch (probes.dead_surrogates). Layer zeros alone are
normal; a member with a zero input gradient on most samples is what the dead_surrogate flag names."""

from __future__ import annotations

from spikeguard.report.blocks import Block, Paragraph, Table
from spikeguard.report.tables import ABSENT, pct
from spikeguard.schema import EvalRecord

NOTE = ("Input gradient zero: percent of clean-correct samples whose input gradient is exactly zero under the "
        "member (the gradient check). Dead derivatives: per spiking layer, percent of exactly-zero local "
        "derivatives d spike / d current over every neuron, step and sample of the probe batch ({samples} "
        "samples). About half of an honest SNN's derivatives are zero under a narrow compact surrogate; a member "
        "whose input gradient is zero on most samples (over {most}) raises dead_surrogate.")


def _layers(entry: dict) -> str:
    shown = ", ".join(f"{name} {pct(value)}" for name, value in (entry.get("layers") or {}).items())
    unmeasured = entry.get("unmeasured") or {}
    if unmeasured:
        reasons = sorted(set(unmeasured.values()))
        shown += ("; " if shown else "") + f"not measured: {', '.join(unmeasured)} ({'; '.join(reasons)})"
    return shown or ABSENT


def gradient_blocks(record: EvalRecord, title: str) -> list[Block]:
    """The table for one results file, or nothing when it records neither the gradient check nor the probe
    (a file from before version 7 shows the gradient check alone)."""
    zero = record.gradient_check.zero_gradient_fraction if record.gradient_check else {}
    probe = (record.probes.dead_surrogates if record.probes else None) or {}
    members = {**{m: {} for m in zero}, **(probe.get("members") or {})}
    if not members:
        return []
    rows = [[member, pct(zero.get(member, entry.get("input_gradient_zero"))), _layers(entry) if probe else ABSENT]
            for member, entry in members.items()]
    most = probe.get("most")
    note = NOTE.format(samples=probe.get("samples", ABSENT), most=ABSENT if most is None else f"{most:.0%}")
    return [Paragraph(f"{title}: zero gradients per member"),
            Table(["member", "input gradient zero (%)", "dead derivatives per layer (%)"], rows), Paragraph(note)]
