"""`spikeguard report`: paper-style tables, flags, theory measurements, figures and configs from results
files (issue 3's schema), run directories and analysis directories, as markdown or self-contained HTML.

Only what the inputs hold is shown: a missing piece is reported as absent, never filled in.
"""

from __future__ import annotations

import base64
import csv
import html as html_lib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spikeguard.analysis.analyze import FORMAT as ANALYSIS_FORMAT
from spikeguard.attacks.registry import ATTACKS
from spikeguard.errors import UserError
from spikeguard.files import write_text
from spikeguard.results import column_label, headline
from spikeguard.rundir import BEST, CONFIG, LAST, METRICS, label_for, read_config, read_metrics, run_directory

PAPER_COLUMNS = ("FGSM", "PGD-10", "PGD-30", "PGD-50")
STRONG_SUITE = "strong"
ABSENT = "—"
MAX_DEPTH = 3
RUN_MARKERS = (CONFIG, METRICS, BEST, LAST)


# ---- collecting the inputs ---------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]
    label: str = ""


@dataclass
class Item:
    """One results file or analysis, with the run it belongs to (if any)."""
    path: Path
    data: dict
    run: Run | None
    label: str = ""
    rows: list[dict] = field(default_factory=list)  # an analysis's per-sample rows


@dataclass
class Inputs:
    runs: dict[Path, Run] = field(default_factory=dict)
    results: list[Item] = field(default_factory=list)
    analyses: list[Item] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _load_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def _kind(data: dict | None) -> str | None:
    if data is None:
        return None
    if data.get("format") == ANALYSIS_FORMAT:
        return "analysis"
    if "attacks" in data and "clean_accuracy" in data:
        return "results"
    return None


def _is_run(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def _run_for(path: Path, inputs: Inputs) -> Run | None:
    """The run directory ``path`` is or lies directly in (run/analysis/), loaded once."""
    for candidate in (path, path.parent):
        if candidate.is_dir() and _is_run(candidate):
            key = candidate.resolve()
            if key not in inputs.runs:
                inputs.runs[key] = Run(candidate, read_config(candidate), read_metrics(candidate / METRICS))
            return inputs.runs[key]
    return None


def _check_same_model(item: Item, what: str) -> None:
    """A results file or analysis must describe the model of the run it sits in."""
    if item.run is None or not item.run.config:
        return
    expected = (item.run.config.get("model"), item.run.config.get("dataset"))
    found = (item.data.get("model"), item.data.get("dataset"))
    if None not in expected and found != expected:
        raise UserError(f"{what} '{item.path}' is for model '{found[0]}' on '{found[1]}', but it sits in run "
                        f"'{item.run.path}' of model '{expected[0]}' on '{expected[1]}'")


def _add_file(path: Path, data: dict, kind: str, inputs: Inputs) -> None:
    if kind == "results":
        item = Item(path, data, _run_for(path.parent, inputs))
        _check_same_model(item, "results file")
        inputs.results.append(item)
        return
    run = _run_for(path.parent, inputs)
    checkpoint = data.get("checkpoint")
    if run is None and checkpoint and run_directory(checkpoint).is_dir():
        run = _run_for(run_directory(checkpoint), inputs)  # an analysis written elsewhere names its run
    item = Item(path, data, run, rows=_read_rows(path.parent / data.get("per_sample", "per_sample.csv")))
    _check_same_model(item, "analysis")
    inputs.analyses.append(item)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def collect(paths: list[Path]) -> Inputs:
    """Results files, analyses and runs from explicit files and from directories (searched MAX_DEPTH deep)."""
    if not paths:
        raise UserError("give at least one results file, run directory or analysis directory")
    inputs = Inputs()
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"input '{path}' does not exist")
        if path.is_file():
            data = _load_json(path)
            kind = _kind(data)
            if kind is None:
                raise UserError(f"'{path}' is not a spikeguard results or analysis file")
            if path.resolve() not in seen:
                seen.add(path.resolve())
                _add_file(path, data, kind, inputs)
            continue
        found = _scan_dir(path, inputs, seen)
        if not found:
            raise UserError(f"'{path}' holds no results file, analysis or run directory")
    _name_everything(inputs)
    return inputs


def _scan_dir(root: Path, inputs: Inputs, seen: set[Path]) -> bool:
    found = False
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "figures" and depth < MAX_DEPTH)
        here = Path(folder)
        if _is_run(here):
            _run_for(here, inputs)
            found = True
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            path = here / name
            if path.resolve() in seen:  # already taken in through another input (a run holds its analysis)
                found = True
                continue
            data = _load_json(path)
            kind = _kind(data)
            if kind is None:
                if name.startswith("results") or name == "analysis.json":
                    inputs.ignored.append(f"{path} (not in the results or analysis schema)")
                continue
            seen.add(path.resolve())
            _add_file(path, data, kind, inputs)
            found = True
    return found


def _name_everything(inputs: Inputs) -> None:
    """Short unique labels: a run's defense (and lambda), with its directory where two would collide."""
    base = {key: label_for(run.config, run.path) for key, run in inputs.runs.items()}
    counts: dict[str, int] = {}
    for label in base.values():
        counts[label] = counts.get(label, 0) + 1
    for key, run in inputs.runs.items():
        run.label = base[key] if counts[base[key]] == 1 else f"{base[key]} [{run.path.name}]"
    for item in inputs.results + inputs.analyses:
        if item.run is not None:
            item.label = item.run.label
        else:
            item.label = item.data.get("label") or item.data.get("defense") or item.path.parent.name or item.path.stem


# ---- the document ------------------------------------------------------------------------------------

Block = tuple  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", path, caption)
#              | ("code", text) | ("list", items)


def _pct(v) -> str:
    return ABSENT if v is None else f"{100 * v:.1f}"


def _num(v, fmt: str = ".3g") -> str:
    return ABSENT if v is None else format(v, fmt)


def attack_column(attack: dict) -> str | None:
    """The paper-table column an attack entry belongs to: FGSM, PGD-10/30/50, or None (other attacks)."""
    kind = str(attack.get("attack", "")).lower()  # the evaluator's attack kind beside a free-form label
    params = dict(attack.get("params") or {})
    if kind not in ATTACKS:  # a results file without the kind: read it off the label ("pgd-10")
        match = re.fullmatch(r"([a-z]+)[-_]?(\d*)", str(attack.get("name", "")).lower())
        kind = match.group(1) if match else ""
        if match and match.group(2):
            params["steps"] = int(match.group(2))
    column = ATTACKS.facts(kind).get("paper_column") if kind in ATTACKS else None
    try:
        column = column.format(**params) if column else None
    except (KeyError, IndexError, ValueError):
        return None
    return column if column in PAPER_COLUMNS else None


def table_column(attack: dict) -> str | None:
    """The main table's column of an attack entry: the published protocol's (FGSM, PGD-10/30/50), else the
    attack's name marked cumulative or alone; None for a random baseline (listed under Attacks)."""
    column = attack_column(attack)
    if column:
        return column
    kind = str(attack.get("attack", attack.get("name", ""))).lower()
    if kind in ATTACKS and ATTACKS.facts(kind).get("random"):
        return None
    if "name" not in attack:
        return None
    return column_label(attack)


def _column_order(column: str) -> tuple:
    match = re.fullmatch(r"PGD-(\d+)", column)
    return (0, 0) if column == "FGSM" else (1, int(match.group(1))) if match else (2, 0)


def _paper_table(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [("p", "Absent: no results files among the inputs (run `spikeguard evaluate`).")]
    blocks: list[Block] = []
    groups: dict[tuple, list[Item]] = {}
    for item in inputs.results:  # keyed by exact values: eps 8/255 and 0.03137 print alike but are not alike
        threat = item.data.get("threat_model") or {}
        eps = None if threat.get("name") == "events-l0" else item.data.get("eps")  # unused under events-l0
        key = (item.data.get("dataset"), threat.get("name", "linf"), eps, threat.get("budget"),
               threat.get("frame_range"))
        groups.setdefault(key, []).append(item)
    for (dataset, *_), items in groups.items():
        threat = _threat_text(items[0].data)
        strong: dict[str, float] = {}
        for item in items:
            if item.data.get("suite") == STRONG_SUITE and item.data.get("ensemble_accuracy") is not None:
                strong[item.label] = min(strong.get(item.label, 1.0), item.data["ensemble_accuracy"])
        labels_with_other = {i.label for i in items if i.data.get("suite") != STRONG_SUITE}
        shown = [i for i in items if not (i.data.get("suite") == STRONG_SUITE and i.label in labels_with_other)]
        per_item = []
        for item in shown:
            cols: dict[str, float] = {}
            for attack in item.data.get("attacks", []):
                col = table_column(attack)
                if col and attack.get("accuracy") is not None:
                    cols[col] = min(cols.get(col, 1.0), attack["accuracy"])
            per_item.append(cols)
        columns = sorted(dict.fromkeys(c for cols in per_item for c in cols), key=_column_order)
        rows = []
        for item, cols in zip(shown, per_item):
            rows.append([item.label, str(item.data.get("suite", ABSENT)), str(item.data.get("n", ABSENT)),
                         _pct(item.data.get("clean_accuracy")), *(_pct(cols.get(c)) for c in columns),
                         _pct(item.data.get("ensemble_accuracy")), _pct(strong.get(item.label))])
        blocks += [("h", 3, f"{dataset}, {threat}"),
                   ("table", ["model", "suite", "n", "clean", *columns, "ensemble (suite)",
                              "ensemble (strong suite)"], rows)]
    blocks.append(("p", (f"Accuracy in percent. {ABSENT} = absent: the results hold no such attack or suite. "
                         "Where several entries fit one column the lowest accuracy is shown. Each attack's accuracy "
                         "is the worst case over its estimators; 'cumulative' columns attacked only what the "
                         "earlier attacks left, the others every clean-correct sample. The ensemble is the "
                         "per-sample worst case over every attack and estimator of the suite.")))
    return blocks


def _threat_text(results: dict) -> str:
    """The threat model and its radius in a few words, for headings."""
    threat = results.get("threat_model") or {"name": "linf"}  # files from before threat models were image l-inf
    if threat.get("name") == "events-l0":
        return f"events-l0, budget {threat.get('budget', ABSENT)} events"
    eps = results.get("eps")
    radius = ABSENT if eps is None else f"{eps:.4g}"
    if threat.get("name") == "frames-linf":
        return f"frames-linf, eps {radius} of the frame range R = {threat.get('frame_range', ABSENT)}"
    return f"{threat.get('name', 'linf')}, eps {radius}"


def _attack_tables(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [("p", "Absent: no results files among the inputs.")]
    blocks: list[Block] = []
    for item in inputs.results:
        d = item.data
        attacks = d.get("attacks", [])
        blocks.append(("h", 3, f"{item.label}: suite {d.get('suite', ABSENT)} ({item.path})"))
        rows = [[str(a.get("name", ABSENT)), str(a.get("norm", ABSENT)), _num(a.get("eps"), ".4g"),
                 ", ".join(a.get("estimators") or []) or ABSENT, params_text(a.get("params") or {}),
                 _pct(a.get("accuracy")), _num(a.get("seconds"), ".1f")] for a in attacks]
        blocks.append(("table", ["attack", "norm", "eps", "estimators", "params", "accuracy", "seconds"], rows)
                      if rows else ("p", "Absent: the results list no attacks."))
        # suite order, not alphabetical: in a cascade each column is the worst case up to that estimator
        estimators = list(dict.fromkeys(e for a in attacks for e in (a.get("accuracy_per_estimator") or {})))
        cumulative = any("cumulative" in str((a.get("params") or {}).get("per_estimator", "")) for a in attacks)
        if estimators:
            rows = [[str(a.get("name", ABSENT)), *(_pct((a.get("accuracy_per_estimator") or {}).get(e))
                                                   for e in estimators)] for a in attacks]
            blocks += [("p", "Accuracy per backward estimator (percent"
                        + ("; cumulative, in cascade order: each column is the worst case over it and the "
                           "columns to its left" if cumulative else "") + "):"),
                       ("table", ["attack", *estimators], rows)]
    return blocks


EXPLANATIONS = ("per_estimator", "accuracy_is")  # sentences stored beside the numbers; the tables say them


def params_text(params: dict) -> str:
    """An attack's parameters for people: "steps 30, alpha 0.319, random start yes"."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(value, v))
        return str(v)

    parts = [f"{k.replace('_', ' ')} {value(v)}" for k, v in params.items() if k not in EXPLANATIONS and v is not None]
    return ", ".join(parts) or ABSENT


def _broke_most(results: dict) -> str:
    """The attack with the lowest accuracy (random baselines aside), and within it the estimator that broke
    the most samples: in a cascade the one whose cumulative accuracy fell most, else the lowest."""
    attacks = [a for a in results.get("attacks", []) if a.get("accuracy") is not None
               and not (a.get("attack") in ATTACKS and ATTACKS.facts(a["attack"]).get("random"))]
    if not attacks:
        return ABSENT
    worst = min(attacks, key=lambda a: a["accuracy"])
    per = worst.get("accuracy_per_estimator") or {}
    if not per:
        return str(worst.get("name", ABSENT))
    cumulative = "cumulative" in str((worst.get("params") or {}).get("per_estimator", ""))
    previous, drops = results.get("clean_accuracy") or 1.0, {}
    for estimator, accuracy in per.items():
        if accuracy is None:
            continue
        drops[estimator] = previous - accuracy
        previous = accuracy if cumulative else previous
    best = max(drops, key=drops.get) if drops else None
    return f"{worst.get('name')} / {best}" if best else str(worst.get("name"))


def headline_mark(results: dict) -> str:
    """"bound", or "not a bound: why" for a headline that is not one; absent without a headline."""
    found = headline(results)
    if found is None:
        return ABSENT
    if found.get("is_bound", True):
        return str(found.get("label") or "bound")
    why = "; ".join(found.get("why") or []) or "no reason recorded"
    return f"{found.get('label') or 'not a bound'}: {why}"


def _verdict(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [("p", "Absent: no results files among the inputs (run `spikeguard evaluate`).")]
    marked = any(headline(item.data) for item in inputs.results)  # results files from before headlines: no column
    rows = []
    for item in inputs.results:
        d = item.data
        flags = d.get("flags")
        rows.append([item.label, f"{d.get('suite', ABSENT)}, {_threat_text(d)}", str(d.get("n", ABSENT)),
                     _pct(d.get("clean_accuracy")), _pct(d.get("ensemble_accuracy")),
                     *([headline_mark(d)] if marked else []), _broke_most(d), ABSENT if flags is None else
                     (", ".join(str(f.get("name", "?")) for f in flags) or "none")])
    header = ["model", "suite and threat", "n", "clean", "worst case", *(["headline"] if marked else []),
              "broke most (attack / estimator)", "flags"]
    note = ("Accuracy in percent; worst case: per sample over every attack and estimator of the suite. "
            + ("A headline that is 'not a bound' cannot be claimed as robust accuracy: the reason follows it. "
               if marked else "") + "Details, per attack and estimator, in the sections below.")
    return [("table", header, rows), ("p", note)]


def _flags(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [("p", "Absent: no results files among the inputs.")]
    blocks: list[Block] = []
    for item in inputs.results:
        flags = item.data.get("flags")
        title = f"{item.label}, suite {item.data.get('suite', ABSENT)}"
        if flags is None:
            blocks.append(("p", f"{title}: absent (the results file records no flags)."))
        elif not flags:
            blocks.append(("p", f"{title}: no flag raised."))
        else:
            blocks += [("p", f"{title}:"),
                       ("list", [f"{f.get('name', '?')}: {f.get('detail', '')}" for f in flags])]
    return blocks


def _theory(inputs: Inputs) -> list[Block]:
    if not inputs.analyses:
        return [("p", "Absent: no analyses among the inputs (run `spikeguard analyze`).")]
    gap_rows, grad_rows, eps_rows, attacks = [], [], [], []
    for item in inputs.analyses:
        a = item.data
        for r in a.get("per_eps", []):
            gap_rows.append([item.label, f"{r['eps']:.4g}", _num(r.get("rho_adv"), ".4f"),
                             _num(r.get("rho_rand"), ".4f"), _num(r.get("ratio")), _num(r.get("rho_rand_abs"), ".4f"),
                             _num(r.get("ratio_abs")), _num(r.get("rho_sign_abs"), ".4f"), _num(r.get("ratio_sign_abs")),
                             _pct(r.get("accuracy_adv")), _pct(r.get("accuracy_rand")), _pct(r.get("accuracy_sign"))])
        g = a.get("gradient", {})
        bracket = g.get("first_order_ratio_abs")
        grad_rows.append([item.label, str(g.get("estimator", ABSENT)), _pct(g.get("zero_fraction")),
                          _pct(g.get("small_fraction")), _num(g.get("l1")), _num(g.get("l2")),
                          _num(g.get("l1_over_l2")), _num(g.get("effective_support")), _num(g.get("sqrt_l0")),
                          f"{bracket[0]:.3g} to {bracket[1]:.3g}" if bracket else ABSENT,
                          _num(g.get("sparsity_bound_rand")), str(g.get("cauchy_schwarz_violations", ABSENT))])
        m = a.get("min_eps") or {}
        adv, rand = m.get("adv", {}), m.get("rand", {})
        eps_rows.append([item.label, f"{_num(adv.get('tolerance'), '.3g')} / {_num(rand.get('tolerance'), '.3g')}",
                         _num(adv.get("median"), ".4g"),
                         _num(rand.get("median"), ".4g"), _num(m.get("ratio_median")),
                         f"{adv.get('never_flipped', ABSENT)} / {rand.get('never_flipped', ABSENT)}",
                         str(m.get("ratio_above_range", ABSENT))])
        info = a.get("attack", {})
        attacks.append(f"{item.label}: {info.get('name', ABSENT)}"
                       + (f" ({info['note']})" if info.get("note") else "")
                       + f"; n = {a.get('n')}, {a.get('draws')} random draws, seed {a.get('seed')}")
    return [
        ("p", ("f is the two-class probability of the true class against its strongest rival; drops are "
               "f(x) - f(x'). rho_rand is the signed mean drop under uniform noise in the eps ball; the "
               "first-order theory bounds the ratio to the mean absolute change (ratio to |change|), see "
               "docs/theory.md.")),
        ("list", attacks),
        ("table", ["model", "eps", "rho_adv", "rho_rand", "ratio", "mean abs change (uniform)", "ratio to abs change",
                   "mean abs change (signs)", "ratio (signs)", "acc. attack", "acc. uniform", "acc. signs"], gap_rows),
        ("p", "Input gradient of f (means over samples; zeros and 'small' in percent of entries):"),
        ("table", ["model", "estimator", "exact zeros", "small", "l1", "l2", "l1/l2", "(l1/l2)^2", "sqrt(l0)",
                   "first-order ratio", "sparsity bound", "Cauchy-Schwarz violations"], grad_rows),
        ("p", "Smallest eps that flips each prediction (bisection; medians over clean-correct samples):"),
        ("table", ["model", "tolerance (attack / noise)", "attack", "uniform noise", "median ratio noise/attack",
                   "never flipped (attack / noise)", "noise beyond range"], eps_rows),
    ]


def _activity(inputs: Inputs) -> list[Block]:
    analysed = [i for i in inputs.analyses if i.data.get("layers")]
    if not analysed:
        return [("p", "Absent: no analysis with spiking layers among the inputs.")]
    rows, totals = [], []
    for item in analysed:
        a = item.data
        for layer in a["layers"]:
            rows.append([item.label, layer["name"], _num(layer["firing_rate"], ".4f"),
                         _pct(layer.get("silent_fraction")), _num(layer.get("spikes_per_inference"), ".4g"),
                         _num(layer.get("fanout"), ".4g"), _num(layer["sops"], ".4g")])
        e, ann = a.get("energy_joules"), a.get("ann_energy_joules")
        totals.append([item.label, _num(a.get("sops_total"), ".4g"), _num(a.get("analog_macs"), ".4g"),
                       _num(a.get("ann_macs"), ".4g"), _num(e * 1e6 if e is not None else None, ".4g"),
                       _num(ann * 1e6 if ann is not None else None, ".4g"),
                       _num(e / ann if e is not None and ann else None, ".3f")])
    constants = analysed[0].data.get("energy_constants", {})
    return [
        ("table", ["model", "layer", "firing rate", "silent neurons", "spikes / inference", "fan-out",
                   "SOPs / inference"], rows),
        ("table", ["model", "SOPs", "analogue MACs", "ANN MACs", "energy (uJ)", "ANN energy (uJ)", "SNN / ANN"],
         totals),
        ("p", (f"Energy constants: {constants.get('e_ac_joules', ABSENT)} J per accumulate, "
               f"{constants.get('e_mac_joules', ABSENT)} J per multiply-accumulate. Source: "
               f"{constants.get('source', ABSENT)}. Scope: {constants.get('scope', ABSENT)}.")),
    ]


def _figures(inputs: Inputs, folder: Path) -> list[Block]:
    from spikeguard.figures import write_figures

    analyses = {i.label: i.data for i in inputs.analyses}
    rows = {i.label: i.rows for i in inputs.analyses if i.rows}
    metrics = {run.label: run.metrics for run in inputs.runs.values() if run.metrics}
    points: dict[str, list] = {}
    for item in inputs.results:
        if item.data.get("eps") is not None and item.data.get("ensemble_accuracy") is not None:
            points.setdefault(item.label, []).append((item.data["eps"], item.data["ensemble_accuracy"],
                                                      item.data.get("suite", "?")))
    compared = {item.label if item.label not in {i.label for i in inputs.results if i is not item}
                else f"{item.label} ({item.data.get('suite', '?')})":
                {"clean": item.data["clean_accuracy"], "worst case": item.data["ensemble_accuracy"]}
                for item in inputs.results
                if item.data.get("clean_accuracy") is not None and item.data.get("ensemble_accuracy") is not None}
    paths = write_figures(analyses, rows, metrics, folder, points, compared)
    captions = {
        "comparison": "Clean and worst-case accuracy per model",
        "accuracy_vs_eps": "Accuracy against eps under the analysis attack and random noise; crosses: the "
                           "evaluator's ensemble accuracy",
        "gradient_sparsity": "Per-sample sparsity of the input gradient of f",
        "ratio_vs_sparsity": "Adversarial-to-random ratio against gradient sparsity, with the first-order "
                             "bracket",
        "firing_rates": "Firing rate per spiking layer",
        "training_curves": "Training curves from metrics.jsonl",
    }
    blocks: list[Block] = [("img", p, captions[name]) for name, p in paths.items()]
    missing = [captions[name] for name in captions if name not in paths]
    if missing:
        blocks.append(("p", "Absent for lack of data: " + "; ".join(missing) + "."))
    return blocks


def _configs(inputs: Inputs) -> list[Block]:
    blocks: list[Block] = []
    for run in inputs.runs.values():
        blocks.append(("p", f"{run.label}: {run.path / 'config.yaml'}"))
        blocks.append(("code", yaml.safe_dump(run.config, sort_keys=False) if run.config
                       else "absent: the run has no config.yaml"))
    for item in inputs.results:
        d = item.data
        meaning = (d.get("threat_model") or {}).get("meaning")
        blocks.append(("p", (f"Results {item.path}: suite {d.get('suite', ABSENT)}, {_threat_text(d)}, "
                             f"n {d.get('n', ABSENT)}, seed {d.get('seed', ABSENT)}, per-sample file "
                             f"{d.get('per_sample', ABSENT)}." + (f" Threat model: {meaning}" if meaning else ""))))
    for item in inputs.analyses:
        settings = item.data.get("settings")
        blocks.append(("p", f"Analysis {item.path} of checkpoint {item.data.get('checkpoint', ABSENT)}:"))
        blocks.append(("code", yaml.safe_dump(settings, sort_keys=False) if settings else "absent"))
    if inputs.ignored:
        blocks += [("p", "Ignored files:"), ("list", inputs.ignored)]
    return blocks or [("p", "Absent: no run configuration among the inputs.")]


SECTIONS = ("Verdict", "Robust accuracy", "Attacks and estimators", "Sanity flags", "Theory: the adversarial-random gap",
            "Activity and energy", "Figures", "Configurations")


def build_document(inputs: Inputs, figure_folder: Path) -> list[Block]:
    figures = _figures(inputs, figure_folder)
    chart = [b for b in figures if b[0] == "img" and Path(b[1]).name == "comparison.png"]
    figures = [b for b in figures if b not in chart]
    builders = (_verdict(inputs) + chart, _paper_table(inputs), _attack_tables(inputs), _flags(inputs), _theory(inputs), _activity(inputs),
                figures, _configs(inputs))
    blocks: list[Block] = [("h", 1, "spikeguard report"),
                           ("p", (f"{len(inputs.results)} results file(s), {len(inputs.analyses)} analysis(es), "
                                  f"{len(inputs.runs)} run(s)."))]
    for title, body in zip(SECTIONS, builders):
        blocks += [("h", 2, title), *body]
    return blocks


# ---- rendering ---------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "code":
            out.append(f"```\n{block[1].rstrip()}\n```")
        elif kind == "img":
            link = Path(os.path.relpath(block[1], base)).as_posix()
            out.append(f"![{block[2]}]({link})\n\n*{block[2]}*")
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines) if rows else "(no rows)")
        out.append("")
    return "\n".join(out)


STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d232a;background:#f6f7f9;margin:0}
main{max-width:62em;margin:0 auto;padding:1.5em 1.2em 4em}
h1{font-size:1.7em;margin:.2em 0}h2{font-size:1.25em;margin:0;display:inline}h3{font-size:1.05em;margin:1.2em 0 .4em}
section.verdict{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.8em 1.2em;margin:1em 0}
section.verdict h2{display:block;margin-bottom:.4em}
details{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.6em 1.2em;margin:.8em 0}
summary{cursor:pointer;padding:.2em 0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;font-variant-numeric:tabular-nums}
td,th{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef1f4;text-align:right}td:first-child,th:first-child{text-align:left}
td.bad{color:#a4161a;font-weight:600}
pre{background:#f1f3f5;padding:.6em;overflow-x:auto;font-size:.85em}
p,li{overflow-wrap:anywhere}
img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
"""


def render_html(blocks: list[Block]) -> str:
    """The document as one self-contained page: the first section (the verdict) open, every later
    section folded into a <details>."""
    esc = html_lib.escape
    body: list[str] = []
    open_section = ""
    for block in blocks:
        kind = block[0]
        if kind == "h" and block[1] == 2:
            body.append(open_section)
            if block[2] == SECTIONS[0]:
                body.append(f'<section class="verdict"><h2>{esc(block[2])}</h2>')
                open_section = "</section>"
            else:
                body.append(f"<details><summary><h2>{esc(block[2])}</h2></summary>")
                open_section = "</details>"
        elif kind == "h":
            body.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{esc(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "code":
            body.append(f"<pre>{esc(block[1])}</pre>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{esc(block[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(block[2])}</figcaption></figure>")
        elif kind == "table":
            head = "".join(f"<th>{esc(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block[2])
            body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
                        "</div>")
    body.append(open_section)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>spikeguard report</title><style>{STYLE}</style></head><body><main>\n" + "\n".join(body)
            + "\n</main></body></html>\n")


def _html_cell(cell) -> str:
    text = str(cell)
    marked = ' class="bad"' if text.startswith("not a bound") else ""
    return f"<td{marked}>{html_lib.escape(text)}</td>"


def write_report(inputs: list[Path], out: Path, html: bool = False) -> Path:
    """Write the report for ``inputs`` (results.json files, run directories, analysis directories) to
    ``out``; figures go to ``<out stem>_figures/`` beside it (linked from markdown, embedded in HTML)."""
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"output '{out}' is a directory; give a file name such as report.md")
    collected = collect([Path(p) for p in inputs])
    figure_folder = out.parent / f"{out.stem}_figures"
    blocks = build_document(collected, figure_folder)
    write_text(out, render_html(blocks) if html else render_markdown(blocks, out.parent))
    return out
