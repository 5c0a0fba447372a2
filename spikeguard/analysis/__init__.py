"""The theory made measurable: the random-vs-adversarial gap, input-gradient sparsity, the minimal eps
that flips a prediction, and spiking activity with its energy (docs/theory.md)."""

from spikeguard.analysis.activity import (
    ENERGY_CONSTANTS,
    measure_activity,
    synaptic_consumers,
)
from spikeguard.analysis.analyze import (
    AnalysisSettings,
    analyze_checkpoint,
    analyze_model,
)
from spikeguard.analysis.gap import draw_directions, gap_at_eps, summarize_gap
from spikeguard.analysis.gradients import (
    first_order,
    gradient_norms,
    probability_gradient,
)
from spikeguard.analysis.min_eps import attack_flips, bisect_min_eps, noise_flips

__all__ = [
    "ENERGY_CONSTANTS", "AnalysisSettings", "analyze_checkpoint", "analyze_model", "attack_flips", "bisect_min_eps",
    "draw_directions", "first_order", "gap_at_eps", "gradient_norms", "measure_activity", "noise_flips",
    "probability_gradient", "summarize_gap", "synaptic_consumers",
]
