"""The single-run report's sections, built as typed blocks from the collected inputs: the verdict, the
paper-style table, attacks and estimators, flags, the theory measurements, activity and energy, figures and
configurations. Only what the inputs hold is shown: a missing piece is said to be absent."""

from __future__ import annotations

from pathlib import Path

import yaml

from spikeguard.errors import UserError
from spikeguard.figures import FIGURE_FILES, write_figures
from spikeguard.report.blocks import (
    Block,
    Code,
    Figure,
    Fold,
    Heading,
    Items,
    Paragraph,
    Table,
)
from spikeguard.report.collect import AnalysisItem, Inputs, ResultsItem
from spikeguard.report.gradients import gradient_blocks
from spikeguard.report.mechanism import margin_ratio, mechanism_blocks
from spikeguard.report.tables import (
    ABSENT,
    STRONG_SUITE,
    PaperRow,
    num,
    paper_table,
    params_text,
    pct,
    table_column,
)
from spikeguard.schema import AttackResult, EvalRecord, SampleOutcome, read_samples

SECTIONS = ("Verdict", "Robust accuracy", "Attacks and estimators", "Sanity flags", "Theory: the adversarial-random gap",
            "Activity and energy", "Figures", "Configurations")
NO_RESULTS = "Absent: no results files among the inputs (run `spikeguard evaluate`)."
FIGURE_CAPTIONS = {
    "comparison": "Clean and worst-case accuracy per model",
    "accuracy_vs_eps": "Accuracy against eps under the analysis attack and random noise; crosses: the "
                       "evaluator's ensemble accuracy",
    "gradient_sparsity": "Per-sample sparsity of the input gradient of f",
    "ratio_vs_sparsity": "Adversarial-to-random ratio against gradient sparsity, with the first-order bracket",
    "firing_rates": "Firing rate per spiking layer",
    "training_curves": "Training curves from metrics.jsonl",
}


def build_document(inputs: Inputs, figure_folder: Path) -> list[Block]:
    """The whole report: a title, what it was made from, and one fold per section (the verdict open, with the
    comparison chart beside it)."""
    figures = _figures(inputs, figure_folder)
    chart = [b for b in figures if isinstance(b, Figure) and Path(b.path).name == FIGURE_FILES["comparison"]]
    figures = [b for b in figures if b not in chart]
    bodies = (_verdict(inputs) + chart, _paper_table(inputs), _attack_tables(inputs), _flags(inputs),
              _theory(inputs), _activity(inputs), figures, _configs(inputs))
    return [Heading(1, "spikeguard report"),
            Paragraph(f"{len(inputs.results)} results file(s), {len(inputs.analyses)} analysis(es), "
                      f"{len(inputs.runs)} run(s)."),
            *(Fold(title, body, folded=title != SECTIONS[0]) for title, body in zip(SECTIONS, bodies))]


# ---- verdict ---------------------------------------------------------------------------------------------

def broke_most(item: ResultsItem) -> str:
    """The attack that broke the most samples first ("pgd-30 (41 samples)"), from the per-sample rows'
    broken_by (the first attack in suite order to reach a sample's worst case). Not the lowest accuracy: an
    attack on survivors only (Square) has the lowest cumulative accuracy while breaking few samples itself."""
    rows = _sample_rows(item)
    if rows is None:
        return f"{ABSENT} (no per-sample file)"
    counts: dict[str, int] = {}
    for row in rows:
        if row.broken_by and row.broken_by != "clean":
            attack = row.broken_by.split("/", 1)[0]
            counts[attack] = counts.get(attack, 0) + 1
    if not counts:
        return "none (no sample broken)"
    order = [a.name for a in item.record.all_attacks()]
    worst = max(counts, key=lambda a: (counts[a], -order.index(a) if a in order else -len(order)))  # ties: suite order
    return f"{worst} ({counts[worst]} sample{'s' if counts[worst] != 1 else ''})"


def _sample_rows(item: ResultsItem) -> list[SampleOutcome] | None:
    """The per-sample rows beside a results file; None when it names none or they cannot be read."""
    if not item.record.per_sample:
        return None
    path = item.path.parent / item.record.per_sample
    try:
        return read_samples(path) if path.is_file() else None
    except UserError:
        return None


def headline_mark(record: EvalRecord) -> str:
    """"bound", or "not a bound: why" for a headline that is not one; absent without a headline."""
    found = record.headline
    if found is None:
        return ABSENT
    if found.is_bound:
        return found.label
    return f"{found.label}: {'; '.join(found.why) or 'no reason recorded'}"


def _flag_names(record: EvalRecord) -> str:
    """The flags raised; absent for a file that records none (version 0 checked no flags)."""
    return ABSENT if record.flags is None else ", ".join(record.flag_names) or "none"


def _verdict(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [Paragraph(NO_RESULTS)]
    # results files from before headlines: no column
    marked = any(item.record.headline is not None for item in inputs.results)
    rows = []
    for item in inputs.results:
        r = item.record
        rows.append([item.label, f"{r.suite or ABSENT}, {threat_text(r)}", str(r.n), pct(r.clean_accuracy),
                     pct(r.ensemble_accuracy), *([headline_mark(r)] if marked else []), broke_most(item),
                     _flag_names(r)])
    header = ["model", "suite and threat", "n", "clean", "worst case", *(["headline"] if marked else []),
              "broke most (first to break)", "flags"]
    note = ("Accuracy in percent; worst case: per sample over every attack and estimator of the suite. "
            + ("A headline that is 'not a bound' cannot be claimed as robust accuracy: the reason follows it. "
               if marked else "") + "Details, per attack and estimator, in the sections below.")
    return [Table(header, rows), Paragraph(note)]


# ---- robust accuracy: the paper-style table --------------------------------------------------------------

EVENTS_L0 = "events-l0"  # the event threat model: a budget of edited events, no eps


def _frame_range(record: EvalRecord):
    """The frame range R of frame threat models (the threat's own description, kept as written)."""
    return (record.threat_model or {}).get("frame_range")


def threat_text(record: EvalRecord) -> str:
    """The threat model and its radius in a few words, for headings (files from before threat models were
    image l-inf)."""
    if record.threat_name == EVENTS_L0:
        budget = record.event_budget
        return f"{EVENTS_L0}, budget {ABSENT if budget is None else budget} events"
    radius = ABSENT if record.eps is None else f"{record.eps:.4g}"
    if record.threat_name == "frames-linf":
        frame_range = _frame_range(record)
        return f"frames-linf, eps {radius} of the frame range R = {ABSENT if frame_range is None else frame_range}"
    return f"{record.threat_name}, eps {radius}"


def _threat_groups(items: list[ResultsItem]) -> dict[tuple, list[ResultsItem]]:
    """Results that share a data set and threat model, keyed by exact values: eps 8/255 and 0.03137 print
    alike but are not alike."""
    groups: dict[tuple, list[ResultsItem]] = {}
    for item in items:
        r = item.record
        eps = None if r.threat_name == EVENTS_L0 else r.eps  # unused under events-l0
        groups.setdefault((r.dataset, r.threat_name, eps, r.event_budget, _frame_range(r)), []).append(item)
    return groups


def _lowest_per_column(record: EvalRecord) -> dict[str, float]:
    """Each table column's accuracy in one results file: the lowest where several entries fit it."""
    cols: dict[str, float] = {}
    for attack in record.attacks:
        col = table_column(attack)
        if col and attack.accuracy is not None:
            cols[col] = min(cols.get(col, 1.0), attack.accuracy)
    return cols


def _paper_rows(items: list[ResultsItem]) -> list[PaperRow]:
    """One row per results file; a model's strong-suite worst case goes in its own column of the model's
    other rows (a strong-suite file gets a row of its own only where the model has no other)."""
    strong: dict[str, float] = {}
    for item in items:
        worst = item.record.ensemble_accuracy
        if item.record.suite == STRONG_SUITE and worst is not None:
            strong[item.label] = min(strong.get(item.label, 1.0), worst)
    labels_with_other = {i.label for i in items if i.record.suite != STRONG_SUITE}
    shown = [i for i in items if not (i.record.suite == STRONG_SUITE and i.label in labels_with_other)]
    return [PaperRow([item.label, item.record.suite or ABSENT, str(item.record.n)], pct(item.record.clean_accuracy),
                     {column: pct(value) for column, value in _lowest_per_column(item.record).items()},
                     [pct(item.record.ensemble_accuracy), pct(strong.get(item.label))])
            for item in shown]


def _paper_table(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [Paragraph(NO_RESULTS)]
    blocks: list[Block] = []
    for (dataset, *_), items in _threat_groups(inputs.results).items():
        blocks += [Heading(3, f"{dataset}, {threat_text(items[0].record)}"),
                   paper_table(["model", "suite", "n"], _paper_rows(items),
                               ["ensemble (suite)", "ensemble (strong suite)"])]
    blocks.append(Paragraph(
        f"Accuracy in percent. {ABSENT} = absent: the results hold no such attack or suite. "
        "Where several entries fit one column the lowest accuracy is shown. Each attack's accuracy "
        "is the worst case over its estimators; 'cumulative' columns attacked only what the "
        "earlier attacks left, the others every clean-correct sample. The ensemble is the "
        "per-sample worst case over every attack and estimator of the suite."))
    return blocks


# ---- attacks and estimators, flags -----------------------------------------------------------------------

def _attack_tables(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [Paragraph("Absent: no results files among the inputs.")]
    blocks: list[Block] = []
    for item in inputs.results:
        attacks = item.record.attacks
        blocks.append(Heading(3, f"{item.label}: suite {item.record.suite or ABSENT} ({item.path})"))
        rows = [[a.name, a.norm, num(a.eps, ".4g"), ", ".join(a.estimators) or ABSENT, params_text(a.params),
                 pct(a.accuracy), num(a.seconds, ".1f")] for a in attacks]
        blocks.append(Table(["attack", "norm", "eps", "estimators", "params", "accuracy", "seconds"], rows)
                      if rows else Paragraph("Absent: the results list no attacks."))
        blocks += _per_estimator(attacks, bool(item.record.cascade))
    return blocks


def _per_estimator(attacks: list[AttackResult], cumulative: bool) -> list[Block]:
    """Each attack's accuracy per backward estimator, in suite order (not alphabetical): in a cascade
    (``cumulative``) each column is the worst case up to that estimator."""
    estimators = list(dict.fromkeys(e for a in attacks for e in a.accuracy_per_estimator))
    if not estimators:
        return []
    rows = [[a.name, *(pct(a.accuracy_per_estimator.get(e)) for e in estimators)] for a in attacks]
    return [Paragraph("Accuracy per backward estimator (percent"
                      + ("; cumulative, in cascade order: each column is the worst case over it and the "
                         "columns to its left" if cumulative else "") + "):"),
            Table(["attack", *estimators], rows)]


def _flags(inputs: Inputs) -> list[Block]:
    if not inputs.results:
        return [Paragraph("Absent: no results files among the inputs.")]
    blocks: list[Block] = []
    for item in inputs.results:
        flags = item.record.flags
        title = f"{item.label}, suite {item.record.suite or ABSENT}"
        if flags is None:
            blocks.append(Paragraph(f"{title}: absent (the results file records no flags)."))
        elif not flags:
            blocks.append(Paragraph(f"{title}: no flag raised."))
        else:
            blocks += [Paragraph(f"{title}:"), Items([f"{f.name}: {f.detail}" for f in flags])]
        blocks += gradient_blocks(item.record, title)
    return blocks


# ---- theory, activity and energy -------------------------------------------------------------------------

THEORY_NOTE = ("f is the two-class probability of the true class against its strongest rival; drops are "
               "f(x) - f(x'). rho_rand is the signed mean drop under uniform noise in the eps ball; the "
               "first-order theory bounds the ratio to the mean absolute change (ratio to |change|), see "
               "docs/theory.md.")


def _gap_rows(item: AnalysisItem) -> list[list[str]]:
    return [[item.label, f"{r['eps']:.4g}", num(r.get("rho_adv"), ".4f"), num(r.get("rho_rand"), ".4f"),
             num(r.get("ratio")), num(r.get("rho_rand_abs"), ".4f"), num(r.get("ratio_abs")),
             num(r.get("rho_sign_abs"), ".4f"), num(r.get("ratio_sign_abs")), margin_ratio(r), pct(r.get("accuracy_adv")),
             pct(r.get("accuracy_rand")), pct(r.get("accuracy_sign"))] for r in item.data.get("per_eps", [])]


def _gradient_row(item: AnalysisItem) -> list[str]:
    g = item.data.get("gradient", {})
    bracket = g.get("first_order_ratio_abs")
    return [item.label, str(g.get("estimator", ABSENT)), pct(g.get("zero_fraction")), pct(g.get("small_fraction")),
            num(g.get("l1")), num(g.get("l2")), num(g.get("l1_over_l2")), num(g.get("effective_support")),
            num(g.get("sqrt_l0")), f"{bracket[0]:.3g} to {bracket[1]:.3g}" if bracket else ABSENT,
            num(g.get("sparsity_bound_rand")), str(g.get("cauchy_schwarz_violations", ABSENT))]


def _min_eps_row(item: AnalysisItem) -> list[str]:
    m = item.data.get("min_eps") or {}
    adv, rand = m.get("adv", {}), m.get("rand", {})
    return [item.label, f"{num(adv.get('tolerance'), '.3g')} / {num(rand.get('tolerance'), '.3g')}",
            num(adv.get("median"), ".4g"), num(rand.get("median"), ".4g"), num(m.get("ratio_median")),
            f"{adv.get('never_flipped', ABSENT)} / {rand.get('never_flipped', ABSENT)}",
            str(m.get("ratio_above_range", ABSENT))]


def _analysis_attack(item: AnalysisItem) -> str:
    a, info = item.data, item.data.get("attack", {})
    return (f"{item.label}: {info.get('name', ABSENT)}" + (f" ({info['note']})" if info.get("note") else "")
            + f"; n = {a.get('n')}, {a.get('draws')} random draws, seed {a.get('seed')}")


def _theory(inputs: Inputs) -> list[Block]:
    if not inputs.analyses:
        return [Paragraph("Absent: no analyses among the inputs (run `spikeguard analyze`).")]
    items = inputs.analyses
    return [
        Paragraph(THEORY_NOTE),
        Items([_analysis_attack(item) for item in items]),
        Table(["model", "eps", "rho_adv", "rho_rand", "ratio", "mean abs change (uniform)", "ratio to abs change",
               "mean abs change (signs)", "ratio (signs)", "ratio, margin units", "acc. attack", "acc. uniform",
               "acc. signs"],
              [row for item in items for row in _gap_rows(item)]),
        Paragraph("Input gradient of f (means over samples; zeros and 'small' in percent of entries):"),
        Table(["model", "estimator", "exact zeros", "small", "l1", "l2", "l1/l2", "(l1/l2)^2", "sqrt(l0)",
               "first-order ratio", "sparsity bound", "Cauchy-Schwarz violations"], [_gradient_row(i) for i in items]),
        Paragraph("Smallest eps that flips each prediction (bisection; medians over clean-correct samples):"),
        Table(["model", "tolerance (attack / noise)", "attack", "uniform noise", "median ratio noise/attack",
               "never flipped (attack / noise)", "noise beyond range"], [_min_eps_row(i) for i in items]),
        *mechanism_blocks(items),
    ]


def _activity(inputs: Inputs) -> list[Block]:
    analysed = [i for i in inputs.analyses if i.data.get("layers")]
    if not analysed:
        return [Paragraph("Absent: no analysis with spiking layers among the inputs.")]
    rows, totals = [], []
    for item in analysed:
        a = item.data
        dead = (a.get("dead_surrogates") or {}).get("layers") or {}  # analyses before issue 21: absent
        for layer in a["layers"]:
            rows.append([item.label, layer["name"], num(layer["firing_rate"], ".4f"),
                         pct(layer.get("silent_fraction")), pct(dead.get(layer["name"])),
                         num(layer.get("spikes_per_inference"), ".4g"),
                         num(layer.get("fanout"), ".4g"), num(layer["sops"], ".4g")])
        e, ann = a.get("energy_joules"), a.get("ann_energy_joules")
        totals.append([item.label, num(a.get("sops_total"), ".4g"), num(a.get("analog_macs"), ".4g"),
                       num(a.get("ann_macs"), ".4g"), num(e * 1e6 if e is not None else None, ".4g"),
                       num(ann * 1e6 if ann is not None else None, ".4g"),
                       num(e / ann if e is not None and ann else None, ".3f")])
    constants = analysed[0].data.get("energy_constants", {})
    return [
        Table(["model", "layer", "firing rate", "silent neurons", "zero surrogate derivatives",
               "spikes / inference", "fan-out", "SOPs / inference"], rows),
        Paragraph("Zero surrogate derivatives: percent of exactly-zero d spike / d current under the analysed "
                  "estimator (first batch); about half is normal for a narrow compact surrogate."),
        Table(["model", "SOPs", "analogue MACs", "ANN MACs", "energy (uJ)", "ANN energy (uJ)", "SNN / ANN"], totals),
        Paragraph(f"Energy constants: {constants.get('e_ac_joules', ABSENT)} J per accumulate, "
                  f"{constants.get('e_mac_joules', ABSENT)} J per multiply-accumulate. Source: "
                  f"{constants.get('source', ABSENT)}. Scope: {constants.get('scope', ABSENT)}."),
    ]


# ---- figures and configurations --------------------------------------------------------------------------

def _figures(inputs: Inputs, folder: Path) -> list[Block]:
    analyses = {i.label: i.data for i in inputs.analyses}
    rows = {i.label: i.rows for i in inputs.analyses if i.rows}
    metrics = {run.label: run.metrics for run in inputs.runs.values() if run.metrics}
    points: dict[str, list] = {}
    compared: dict[str, dict[str, float]] = {}
    for item in inputs.results:
        r = item.record
        if r.eps is not None and r.ensemble_accuracy is not None:
            points.setdefault(item.label, []).append((r.eps, r.ensemble_accuracy, r.suite or "?"))
        if r.clean_accuracy is not None and r.ensemble_accuracy is not None:
            shared = item.label in {i.label for i in inputs.results if i is not item}
            compared[f"{item.label} ({r.suite or '?'})" if shared else item.label] = {
                "clean": r.clean_accuracy, "worst case": r.ensemble_accuracy}
    one_eps = _one_eps(analyses, points)
    paths = write_figures(analyses, rows, metrics, folder, {} if one_eps else points, compared)
    blocks: list[Block] = [Figure(p, FIGURE_CAPTIONS[name]) for name, p in paths.items()]
    missing = [caption for name, caption in FIGURE_CAPTIONS.items() if name not in paths
               and not (one_eps and name == "accuracy_vs_eps")]
    if missing:
        blocks.append(Paragraph("Absent for lack of data: " + "; ".join(missing) + "."))
    if one_eps:
        blocks.append(Paragraph(f"{FIGURE_CAPTIONS['accuracy_vs_eps'].split(';')[0]}: left out, every results file "
                                f"is at one eps ({one_eps}) and no analysis sweeps eps (`spikeguard analyze` does)."))
    return blocks


def _one_eps(analyses: dict[str, dict], points: dict[str, list]) -> str:
    """The single eps of the evaluator's points when nothing else would give the accuracy-vs-eps figure a
    second eps (a figure of one eps says nothing), else ''."""
    radii = {eps for found in points.values() for eps, _, _ in found}
    if any(a.get("per_eps") for a in analyses.values()) or len(radii) != 1:
        return ""
    return f"{next(iter(radii)):g}"


def _configs(inputs: Inputs) -> list[Block]:
    blocks: list[Block] = []
    for run in inputs.runs.values():
        blocks.append(Paragraph(f"{run.label}: {run.path / 'config.yaml'}"))
        blocks.append(Code(yaml.safe_dump(run.config, sort_keys=False) if run.config
                           else "absent: the run has no config.yaml"))
    for item in inputs.results:
        r = item.record
        meaning = (r.threat_model or {}).get("meaning")  # the threat's own description, kept as written
        blocks.append(Paragraph(f"Results {item.path}: suite {r.suite or ABSENT}, {threat_text(r)}, n {r.n}, "
                                f"seed {ABSENT if r.seed is None else r.seed}, per-sample file "
                                f"{r.per_sample or ABSENT}." + (f" Threat model: {meaning}" if meaning else "")))
    for analysis in inputs.analyses:
        settings = analysis.data.get("settings")
        blocks.append(Paragraph(f"Analysis {analysis.path} of checkpoint {analysis.data.get('checkpoint', ABSENT)}:"))
        blocks.append(Code(yaml.safe_dump(settings, sort_keys=False) if settings else "absent"))
    if inputs.ignored:
        blocks += [Paragraph("Ignored files:"), Items(inputs.ignored)]
    return blocks or [Paragraph("Absent: no run configuration among the inputs.")]
