"""The training checkpoint payload: the generator names older checkpoints use, and their "scaler" entry."""

from pathlib import Path

import pytest
import torch

from spikeguard.config import config_from_dict
from spikeguard.defenses import create_defense
from spikeguard.training import build_run
from spikeguard.training_state import capture, generators, restore

NAMES = {"vanilla": [], "gr": [], "sr": [], "at": ["defense.examples.generator"],
         "sr_star": ["defense.examples.generator"], "rat": ["defense.examples.generator", "defense.rows"],
         "sr_rat": ["defense.examples.generator", "defense.rows"], "sr_gr": [],
         "sr_distill": []}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_defense_names_its_generators_as_checkpoints_store_them(name):
    defense = create_defense(name, lamb=0.1, gr_lamb=0.1, seed=3, teacher=torch.nn.Identity())
    state = type("State", (), {"shuffle": torch.Generator(), "defense": defense})()
    assert list(generators(state)) == ["shuffle", *NAMES[name]]


def test_reseeding_the_examples_touches_only_their_generator():
    defense = create_defense("rat", seed=3)
    rows = defense.rows.get_state()
    defense.reseed_examples(11)
    assert torch.equal(defense.examples.generator.get_state(), torch.Generator().manual_seed(11).get_state())
    assert torch.equal(defense.rows.get_state(), rows)
    create_defense("gr", lamb=0.1).reseed_examples(11)  # no examples: nothing to do


def test_a_checkpoint_with_the_old_scaler_entry_restores(digits):
    cfg = config_from_dict({"dataset": "digits", "defense": "at", "epochs": 1, "time_steps": 2}).resolved()
    state = build_run(cfg, Path("unused"), torch.device("cpu"), digits)
    payload = capture(state)
    assert "scaler" not in payload
    torch.rand(5, generator=state.defense.examples.generator)
    state.step = 7
    restore(state, {**payload, "scaler": None})
    assert state.step == 0
    assert torch.equal(state.defense.examples.generator.get_state(), payload["generators"]["defense.examples.generator"])
