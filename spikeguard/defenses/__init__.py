"""Training objectives: vanilla, AT, RAT, GR, SR and SR*; and the public SR penalty."""

from spikeguard.defenses.objectives import AdversarialExamples, Defense
from spikeguard.defenses.registry import DEFENSES, create_defense
from spikeguard.defenses.sparsity import sparsity_penalty, true_class_probability

__all__ = ["DEFENSES", "AdversarialExamples", "Defense", "create_defense", "sparsity_penalty",
           "true_class_probability"]
