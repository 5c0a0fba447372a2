"""The registries: readable without PyTorch, consistent with each other, and the source of the CLI's help."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikeguard.cli import main
from spikeguard.data.registry import DATASET_REGISTRY
from spikeguard.defenses.registry import DEFENSES
from spikeguard.models.registry import MODELS
from spikeguard.snn.registry import ENCODERS, ESTIMATORS

REPO = Path(__file__).resolve().parents[1]

TORCH_FREE = """
import sys
import spikeguard.cli
import spikeguard.config as c
from spikeguard.snn.registry import parse_estimator
for dataset, defense in (("digits", "sr"), ("mnist5k", "at"), ("cifar10", "gr"), ("cifar10dvs", "sr_star")):
    c.TrainConfig(dataset=dataset, defense=defense, lamb=0.1).resolved()
assert parse_estimator("hart").name == "hart:0.5"
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not heavy, heavy
"""


def test_config_cli_and_registries_load_without_torch():
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_registered_facts_agree_with_each_other():
    for name in DATASET_REGISTRY:
        data = DATASET_REGISTRY.get(name)
        assert data.default_model in MODELS and data.kind in MODELS.facts(data.default_model)["inputs"]
        assert data.kind in ("image", "event") and data.num_classes >= 2 and data.time_steps >= 1
    for name in ENCODERS:
        assert ENCODERS.facts(name)["inputs"] in ("image", "event")
    for name in ESTIMATORS:
        assert ESTIMATORS.facts(name)["kind"] in ("surrogate", "rate", "temporal", "adaptive")
    for name in DEFENSES:
        facts = DEFENSES.facts(name)
        assert set(facts) == {"description", "needs_lamb", "penalised", "makes_examples", "refuses_bf16",
                              "refuses_compile", "refuses_sync_bn", "settings", "combines"}
        assert all(part in DEFENSES and not DEFENSES.facts(part)["combines"] for part in facts["combines"])
    assert DEFENSES.names(needs_lamb=True) == ("gr", "sr", "sr_star", "sr_rat", "sr_gr", "sr_distill")
    assert DEFENSES.names(makes_examples=True) == ("at", "rat", "sr_star", "sr_rat")
    assert [n for n in DEFENSES if DEFENSES.facts(n)["combines"]] == ["sr_star", "sr_rat", "sr_gr", "sr_distill"]


@pytest.mark.parametrize("command", ["train", "analyze"])
def test_help_lists_every_registered_choice(command, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    names = (list(DATASET_REGISTRY) + list(MODELS) + list(DEFENSES) + list(ENCODERS) if command == "train"
             else list(ESTIMATORS))
    for name in names:
        assert name in text, name
    if command == "train":
        assert "dvs_cnn" in text and "frames" in text
