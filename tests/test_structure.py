"""The package's shape, checked on its source: no import cycle, nothing below the entry points imports the
training loop, and no module outside the attack registry tells attack kinds apart by string literals."""

import ast
import functools
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "spikeguard"
LOWER_LAYERS = ("snn", "models", "data", "defenses", "attacks", "evaluation", "analysis", "distributed.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def is_registry(name: str) -> bool:
    return name == "spikeguard.registry" or name.endswith(".registry")


def imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    """spikeguard modules a module imports (with top_level_only: at import time, not inside functions)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("spikeguard")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spikeguard"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_import_cycle_among_the_packages_modules():
    trees = modules()
    # Every import counts, also one inside a function (the train <-> distributed cycle was one), except
    # that a registry loads the implementations it names on first use: that is its design, and those
    # implementations import the registry for its facts.
    graph = {name: {m for m in imports(tree, top_level_only=is_registry(name)) if m in trees and m != name}
             for name, tree in trees.items()}
    state, cycle = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == "open":
                cycle.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycle, f"import cycle: {' -> '.join(cycle[0])}"


def test_only_entry_points_import_the_training_loop():
    offenders = []
    for name, tree in modules().items():
        relative = name.removeprefix("spikeguard.").replace(".", "/")
        if any(relative == layer.removesuffix(".py") or relative.startswith(layer + "/") for layer in LOWER_LAYERS):
            if any(m == "spikeguard.training" or m.startswith("spikeguard.training.") for m in imports(tree, False)):
                offenders.append(name)
    assert offenders == []


def test_attack_kinds_are_told_apart_by_the_registry_only():
    from spikeguard.attacks.registry import ATTACKS

    names = set(ATTACKS)
    offenders = []
    for name, tree in modules().items():
        if name == "spikeguard.attacks.registry":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                    hits = [v.value for v in values if isinstance(v, ast.Constant) and v.value in names]
                    if hits:
                        offenders.append(f"{name}:{node.lineno} compares with {hits}")
    # the training example generator (fgsm | pgd) is a defense setting, not an evaluation attack kind
    offenders = [o for o in offenders if not o.startswith("spikeguard.defenses.")]
    assert offenders == []


def test_evaluation_flags_are_checked_without_pytorch(tmp_path):
    """The evaluation's config and the attack registry load, and an EvalConfig validates, with no torch
    (tests/test_registries.py checks the command line, TrainConfig and the other registries)."""
    code = ("import sys\nfrom spikeguard.evaluation import EvalConfig\nimport spikeguard.attacks.registry\n"
            "EvalConfig(suite='strong', eps='8/255', n=10, threat_model='linf').validated()\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---- size limits (issue 20): a module a reader can hold in mind, a function a reader can follow ----------

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
SHORT_FUNCTION_PACKAGES = ("spikeguard.evaluation", "spikeguard.report")
LONG_MODULES: set[str] = set()  # an exemption, with its reason, would go here
LONG_FUNCTIONS: set[str] = set()  # "module:function"; evaluate.assess was one until issue 20 split it into steps


def _source_files():
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_no_module_is_over_450_lines():
    long = {_relative(p): n for p in _source_files() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert set(long) - LONG_MODULES == set(), long
    assert LONG_MODULES - set(long) == set(), "no longer over the limit: drop the exemption"


def test_no_function_in_evaluation_or_report_is_over_60_lines():
    """From its def line to its last line (docstring and comments included, decorators not)."""
    long = {}
    for name, tree in modules().items():
        if not any(name == package or name.startswith(package + ".") for package in SHORT_FUNCTION_PACKAGES):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}:{node.name}"] = length
    assert set(long) - LONG_FUNCTIONS == set(), long
    assert LONG_FUNCTIONS - set(long) == set(), "no longer over the limit: drop the exemption"


# results.json's keys and the per-sample rows' columns: only spikeguard/schema/ reads and writes them by name.
RESULTS_KEYS = {"schema_version", "clean_accuracy", "ensemble_accuracy", "ensemble_accuracy_before_escalation",
                "attacks", "headline", "flags", "flags_not_applicable", "escalation", "per_sample", "suite_spec",
                "gradient_check", "unbounded_accuracy", "unbounded_check", "eps_sweep", "budget_sweep",
                "estimator_bank", "threat_model", "accuracy_per_estimator", "external_model", "imported_checkpoint",
                "checkpoint_sha256", "clean_correct", "robust", "broken_by", "zero_gradient"}
# Other documents that use some of the same names for their own fields.
OWN_DOCUMENTS = {
    "spikeguard.evaluation.suites": {"attacks", "escalation"},  # a suite file's sections
    "spikeguard.demo": {"attacks", "clean_accuracy", "ensemble_accuracy", "flags", "headline"},  # the demo's summary
    "spikeguard.study.cell": {"headline"},  # a cell record's number to quote
    "spikeguard.study.groups": {"headline"},  # ... which the study summary reads (flat_numbers)
    "spikeguard.report.collect": {"per_sample"},  # an analysis.json's per-sample file
}


def results_key(node: ast.AST) -> str | None:
    """The results key ``node`` reads or writes by name: x["key"], x.get("key"), or an f"{label}|..." column."""
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Constant) and index.value in RESULTS_KEYS:
            return index.value
        if isinstance(index, ast.JoinedStr) and any(isinstance(v, ast.Constant) and "|" in str(v.value)
                                                    for v in index.values):
            return "label|member column"
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault") and node.args):
        first = node.args[0]
        if isinstance(first, ast.Constant) and first.value in RESULTS_KEYS:
            return first.value
    return None


def test_only_the_schema_indexes_results_by_key():
    offenders = []
    for name, tree in modules().items():
        if name == "spikeguard.schema" or name.startswith("spikeguard.schema."):
            continue
        for node in ast.walk(tree):
            key = results_key(node)
            if key is not None and key not in OWN_DOCUMENTS.get(name, ()):
                offenders.append(f"{name}:{node.lineno} reads '{key}'")
    assert offenders == [], "read results through spikeguard.schema (EvalRecord, SampleOutcome)"


def test_the_key_check_finds_what_it_looks_for():
    planted = ast.parse('a = r["headline"]\nb = r.get("flags")\nc = row[f"{label}|{member}"]\nd = r["model"]')
    assert [results_key(n) for n in ast.walk(planted) if results_key(n)] == ["headline", "flags",
                                                                           "label|member column"]

