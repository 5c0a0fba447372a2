"""SpikingJelly and snnTorch models in spikeguard: one adapter per library behind a common interface
(library.py, which registers them), their neuron state (state.py), the estimator rules on their neurons
(rules.py) and what an evaluation records of them (provenance.py)."""

from spikeguard.adapters.library import (
    LIBRARIES,
    ExternalNeuron,
    LibraryAdapter,
    external_neurons,
    has_external_neurons,
    library_of,
    reset_state,
    uses_library,
)
from spikeguard.adapters.provenance import library_facts, weights_sha256
from spikeguard.adapters.rules import (
    LibraryNeuron,
    SpikeWith,
    coverage,
    not_applicable,
    surrogate_for,
    under,
)
from spikeguard.adapters.snntorch_neurons import snntorch_logits
from spikeguard.adapters.state import Resetting, preserved_state, stateless

__all__ = ["LIBRARIES", "ExternalNeuron", "LibraryAdapter", "LibraryNeuron", "Resetting", "SpikeWith", "coverage",
           "external_neurons", "has_external_neurons", "library_facts", "library_of", "not_applicable",
           "preserved_state", "reset_state", "snntorch_logits", "stateless", "surrogate_for", "under",
           "uses_library", "weights_sha256"]
