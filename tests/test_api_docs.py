"""docs/api.md: every Python example runs, top to bottom in one session as the page says (the shipped
suites replaced by a small one for CI time), and every public top-level name is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import spikeguard

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"name": "small", "attacks": [{"attack": "fgsm", "estimators": ["triangle:1", "ann"]},
                                      {"attack": "pgd", "steps": 2, "estimators": ["atan:2"]}]}


def test_every_api_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 10
    suite = tmp_path / "small.yaml"
    suite.write_text(yaml.safe_dump(SMALL))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks):
        block = re.sub(r'suite="(quick|strong)"', f'suite="{suite}"', block)
        exec(compile(block, f"docs/api.md example {number + 1}", "exec"), namespace)
    result = namespace["result"]
    assert namespace["wrong"].tolist() == [r["robust"] == 0 for r in result.per_sample]


def test_every_public_name_is_documented():
    text = (ROOT / "docs" / "api.md").read_text()
    for name in spikeguard.__all__:
        assert f"spikeguard.{name}" in text, name
    for name in ("PGD", "FGSM", "AutoAttack", "Square", "attack_class", "register_attack", "register_estimator",
                 "sparsity_penalty", "create_defense", "EvalConfig", "run_evaluation", "wrap_external", "under"):
        assert name in text, name


def test_readme_path_from_a_spikingjelly_network_to_an_evaluated_sr_checkpoint(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## SpikingJelly and snnTorch models"):]
    network, path = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    assert len(path.strip().splitlines()) < 15
    cls = network[:network.index("model = JellyCSNN()")]  # the README's class, as my_snn.py holds it
    (tmp_path / "my_snn.py").write_text(cls + "\n\ndef build():\n    torch.manual_seed(0)\n    return JellyCSNN()\n")
    suite = tmp_path / "small.yaml"
    suite.write_text(yaml.safe_dump(SMALL))
    path = re.sub(r"epochs=\d+", "epochs=1, batch_size=256", path).replace('suite="strong"', f'suite="{suite}"')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(path, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.results["dataset"] == "digits" and namespace["model"].facts["defense"] == "sr"
    assert (tmp_path / "runs" / "jelly_sr" / "strong.json").is_file()
