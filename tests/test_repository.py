"""The repository's own promises: the licence and citation files a research package needs, and README
references that point at files which exist (a renamed module or a deleted doc must not leave a dead pointer)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("docs", "spikeguard", "tests", "benchmarks", "experiments", "studies", "configs", "scripts",
             "crosscheck")


def _readme_paths(text: str) -> set[str]:
    """Repository paths the README names: markdown link targets and `code` spans under a top-level folder."""
    links = re.findall(r"\]\(([^)#:\s]+)\)", text)
    spans = re.findall(r"`([A-Za-z0-9_./-]+)`", text)
    named = {p for p in links if not p.startswith("http")}
    named |= {p for p in spans if "/" in p and p.split("/")[0] in TOP_LEVEL}
    return named


def test_readme_names_only_files_that_exist():
    text = (ROOT / "README.md").read_text()
    missing = sorted(p for p in _readme_paths(text) if not (ROOT / p.rstrip("/")).exists())
    assert missing == []


def test_readme_path_check_sees_a_dead_pointer():
    # the check above must be able to fail: a made-up module and a made-up link are both found
    named = _readme_paths("see `spikeguard/no_such_module.py` and [the design](docs/NO_SUCH.md)")
    assert {"spikeguard/no_such_module.py", "docs/NO_SUCH.md"} <= named
    assert not (ROOT / "spikeguard/no_such_module.py").exists()


def test_licence_and_citation():
    import spikeguard

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == spikeguard.__version__
    assert citation["license"] == "MIT"
    paper = citation["references"][0]
    assert "Sparse Gradients" in paper["title"] and paper["year"] == 2024
