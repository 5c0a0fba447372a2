"""docs/findings.md and the studies behind it (issue 25): every preset the page names loads and expands to the
cells the page reports, a study folder committed under studies/results/ holds exactly that plan's cells, and
the validation-split selection rules choose as the page says."""

import json
import re
from pathlib import Path

import pytest

from spikeguard.study.plan import load_plan
from spikeguard.study.selection import Candidate, best_near_clean, best_within_drop
from spikeguard.study.state import read_plan

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "findings.md"
# a row of the page's table of studies: | question | `studies/NAME.yaml` | cells | ...
ROW = re.compile(r"^\|[^|]+\| `studies/([\w.-]+)\.yaml` \| (\d+) \|", re.MULTILINE)


def reported() -> dict[str, int]:
    return {name: int(cells) for name, cells in ROW.findall(PAGE.read_text())}


def test_the_page_names_a_preset_for_each_question_and_the_readme_links_it():
    names = reported()
    assert len(names) >= 4 and all(name.startswith("findings-") for name in names)
    assert "docs/findings.md" in "\n".join((ROOT / "README.md").read_text().splitlines()[:40])  # the first screen


@pytest.mark.parametrize("name", sorted(reported()))
def test_each_preset_loads_and_expands_to_the_cells_the_page_reports(name):
    plan = load_plan(ROOT / "studies" / f"{name}.yaml")
    assert plan.name == name and len(plan.cells) == reported()[name]
    assert f"spikeguard study studies/{name}.yaml --out" in PAGE.read_text()  # the command that reproduces it
    kept = ROOT / "studies" / "results" / name
    if (kept / "plan.yaml").is_file():  # committed cells belong to this very plan, so a rerun skips them
        assert read_plan(kept).fingerprint() == plan.fingerprint()
        study = json.loads((kept / "study.json").read_text())
        assert [c["id"] for c in study["cells"]] == [c.id for c in plan.cells]
        for cell in study["cells"]:
            if cell["status"] == "done":
                cell_dir = kept / "cells" / cell["id"]
                assert (kept / "cells" / f"{cell['id']}.json").is_file() and not list(cell_dir.glob("*.pt"))
                # its analysis figures redraw from the kept files (studies/results/.gitignore), so none is kept
                assert not (cell_dir / "analysis" / "figures").exists()


# the state column of that table: "answered: 12 of 12 cells", "in progress: 9 of 12 cells"
STATE = re.compile(r"^\|[^|]+\| `studies/([\w.-]+)\.yaml` \| \d+ \| ([\w ]+): (\d+) of (\d+) cells", re.MULTILINE)


def test_each_study_state_the_page_gives_is_that_of_its_kept_cells():
    """"answered: N of N cells" only where all N are kept as done; an unfinished study reads "in progress"."""
    states = STATE.findall(PAGE.read_text())
    assert {name for name, *_ in states} == set(reported())
    for name, word, done, cells in states:
        study = json.loads((ROOT / "studies" / "results" / name / "study.json").read_text())
        kept = sum(cell["status"] == "done" for cell in study["cells"])
        assert (int(done), int(cells)) == (kept, len(study["cells"])), name
        assert word == ("answered" if kept == len(study["cells"]) else "in progress"), name


def _candidates(*rows):
    return [Candidate({"lamb": lamb}, clean, robust) for lamb, clean, robust in rows]


def test_best_within_drop_takes_the_most_robust_that_keeps_clean_accuracy():
    rows = _candidates((0.01, 0.97, 0.30), (0.03, 0.955, 0.40), (0.1, 0.90, 0.60))
    choice = best_within_drop(rows, reference_clean=0.98, max_drop=0.03)
    assert choice.reached and choice.candidate.settings == {"lamb": 0.03}  # 0.1 is more robust but loses 8 points
    choice = best_within_drop(rows, reference_clean=1.0, max_drop=0.02)
    assert not choice.reached and choice.candidate.settings == {"lamb": 0.01}


def test_best_near_clean_matches_clean_accuracy_both_ways_or_says_not_reached():
    rows = _candidates((0.01, 0.99, 0.50), (0.03, 0.95, 0.40), (0.1, 0.93, 0.45))
    choice = best_near_clean(rows, reference_clean=0.94, tolerance=0.02)
    assert choice.reached and choice.candidate.settings == {"lamb": 0.1}  # 0.99 is more robust but 5 points above
    choice = best_near_clean(rows, reference_clean=0.80, tolerance=0.02)
    assert not choice.reached and choice.candidate.settings == {"lamb": 0.1} and "not reached" in choice.why


def test_the_gpu_checks_tiny_study_covers_every_combined_defense_and_an_ensemble():
    """benchmarks/gpu_check.sh runs this plan on CUDA: a combined defense registered later joins it, or this fails."""
    from spikeguard.defenses.registry import DEFENSES

    plan = load_plan(ROOT / "benchmarks" / "gpu_study.yaml")
    trained = {cell.config.defense for cell in plan.cells if not cell.members}
    combined = {name for name in DEFENSES if DEFENSES.get(name).combines}
    assert combined and combined <= trained
    assert any(cell.members for cell in plan.cells)
    assert [e["suite"] for e in plan.evaluate] == ["strong", "paper"] and plan.analyze is not None


def test_the_mnist5k_preset_uses_the_settings_chosen_on_its_validation_split():
    """findings-mnist5k's epochs, eps and each network's SR lambda are those studies/selection/mnist5k.json chose."""
    chosen = json.loads((ROOT / "studies" / "selection" / "mnist5k.json").read_text())["chosen"]
    plan = load_plan(ROOT / "studies" / "findings-mnist5k.yaml")
    networks = set()
    for cell in plan.cells:
        config = cell.config
        assert (config.dataset, config.epochs, config.eps) == ("mnist5k", chosen["epochs"], chosen["eps"])
        if config.defense == "sr":
            networks.add(config.network)
            assert config.lamb == chosen[f"lamb_{config.network}"]["lamb"]
    assert networks == {"snn", "ann"} and {e["eps"] for e in plan.evaluate} == {chosen["eps"]}
    assert plan.analyze["eps"] == [chosen["eps"]]
