"""A study's aggregated report: DIR/summary.md, DIR/summary.html and DIR/figures/ (``spikeguard report DIR``).

Cells that differ only in their seed form a group; each number is the mean over the group's finished
seeds with a 95% confidence interval (Student t, n - 1 degrees of freedom; none for one seed). Comparisons
with vanilla pair cells by seed (same split, same initialisation stream) and give the interval of the
mean paired difference. Only finished cells count; the report says how many of each group finished.
"""

from __future__ import annotations

import json
from pathlib import Path

from spikeguard.files import write_text
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
from spikeguard.report.render import render_html, render_markdown
from spikeguard.report.tables import (
    ABSENT,
    PAPER_SUITE,
    STRONG_SUITE,
    PaperRow,
    ordered_columns,
    paper_table,
    pct,
)
from spikeguard.study.energy_summary import energy_blocks
from spikeguard.study.estimator_summary import estimator_blocks
from spikeguard.study.groups import (
    TRADE_OFF,
    Group,
    cell_text,
    flat_numbers,
    groups_of,
    matching_vanilla,
    mean_interval,
    other_settings,
    trade_off_figure,
)
from spikeguard.study.mechanism_summary import mechanism_blocks
from spikeguard.study.state import PLAN, read_plan, read_study, write_study

FIGURES = "figures"


# ---- the document ---------------------------------------------------------------------------------------

def build(study_dir: Path) -> list[Block]:
    study = read_study(study_dir)
    plan = study["plan"]
    groups = groups_of(study)
    finished = [c for c in study["cells"] if c["status"] == "done" and c.get("numbers")]
    # the suites' own names (a suite file's name field), as the results files record them
    suites = ([e["suite"] for e in finished[0]["numbers"]["evaluations"]] if finished
              else [Path(str(e["suite"])).stem for e in plan["evaluate"]])
    counts = counts_text(study.get("counts", {}))
    return [
        Heading(1, f"Study {study['name']}"),
        Paragraph(f"{len(study['cells'])} cells ({counts}); {study.get('threads')} torch thread(s) per cell. Numbers "
                  "are means over seeds with 95% confidence intervals (Student t); accuracies in percent on the test "
                  f"split. The headline worst case is that of the first evaluation (suite {suites[0]}). Cells: "
                  f"{study_dir / 'cells'}."),
        Paragraph(where_and_how_long(study)),
        Fold("Verdict", _verdict(groups) + _headline_numbers(groups), folded=False),
        Fold("Trade-offs across lambda", _trade_offs(groups, study_dir), folded=False),  # the figure, shown
        Fold("The mechanism: what SR changes in the gradient", mechanism_blocks(
            groups, study_dir, study_dir / FIGURES / "decomposition.png"), folded=False),
        Fold("Energy: firing rates, synaptic operations, robustness per energy",
             energy_blocks(groups, study_dir / FIGURES / "energy.png"), folded=False),
        Fold("Which estimator breaks it", estimator_blocks(groups, str(plan.get("train", {}).get(
            "train_estimator", "triangle:1")), study_dir / FIGURES / "estimators.png"), folded=False),
        Fold("Paper-style table", _paper_table(groups, suites)),
        Fold("FGSM and PGD with and without SR", _fgsm_pgd(groups, suites)),
        Fold("Cells", _cells(study)),
        Fold("Plan", [Code(json.dumps(plan, indent=2))]),
    ]


def where_and_how_long(study: dict) -> str:
    """The machines the finished cells ran on, their threads and wall time (each step's time, summed over
    reruns of a cell, so a study spread over days and machines still adds up)."""
    done = [c for c in study["cells"] if c["status"] == "done"]
    if not done:
        return "No cell has finished yet."
    machines: dict[str, int] = {}
    for cell in done:
        name = cell.get("machine") or "machine not recorded"
        machines[name] = machines.get(name, 0) + 1
    seconds = sorted(sum((c.get("timing") or {}).values()) for c in done)
    threads = sorted({c.get("threads") for c in done if c.get("threads")})
    on = "; ".join(f"{name} ({n} cell{'s' if n > 1 else ''})" for name, n in machines.items())
    reused = sorted({c["reused_from"].split("/")[0] for c in done if c.get("reused_from")})
    copied = sum(bool(c.get("reused_from")) for c in done)
    return (f"Ran on: {on}; {', '.join(map(str, threads)) or '?'} torch thread(s) per cell. Wall time of the "
            f"{len(done)} finished cells: {sum(seconds) / 3600:.2f} h of cell time in all (median "
            f"{seconds[len(seconds) // 2] / 60:.1f} min per cell; cells run side by side with --parallel)."
            + (f" {copied} of them were copied from {', '.join(reused)} (the same training configuration, "
               "evaluations, analysis and threads: the same numbers); their times are those runs'." if copied else ""))


def counts_text(counts: dict[str, int]) -> str:
    """A study's cell counts as words: "4 done, 1 failed"."""
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no cells"


def _verdict_line(group: Group, baseline: Group) -> str | None:
    """The group's worst case against vanilla's, paired by seed; None without a seed both finished."""
    ours, theirs = group.by_seed("worst_case"), baseline.by_seed("worst_case")
    seeds = sorted(set(ours) & set(theirs), key=str)
    if not seeds:
        return None
    mean, half = mean_interval([ours[s] - theirs[s] for s in seeds])
    if half is None:  # the numbers themselves, and why they carry no verdict
        seed = seeds[0]
        return (f"{group.label}: worst case {100 * ours[seed]:.1f}% against vanilla's {100 * theirs[seed]:.1f}% "
                f"({100 * mean:+.1f} points) on seed {seed} only: with one seed no interval is possible, so no "
                "verdict (add seeds to the plan's grid).")
    if mean - half > 0:
        verdict = "better than vanilla"
    elif mean + half < 0:
        verdict = "worse than vanilla"
    else:
        verdict = "undecided (the interval spans 0)"
    interval = f" [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]" if half is not None else ""
    return (f"{group.label}: worst case {100 * mean:+.1f} points against vanilla{interval} over "
            f"{len(seeds)} paired seed(s): {verdict}.")


def _verdict(groups: list[Group]) -> list[Block]:
    """Each penalised group against vanilla with the same other settings, paired by seed; each combined defense
    (SR*, SR + RAT, SR + GR) against each of its parts."""

    lines = []
    for group in groups:
        if group.settings.get("defense") in (None, "vanilla") or not group.cells or "ensemble" in group.settings:
            continue
        baseline = matching_vanilla(group, groups)
        line = _verdict_line(group, baseline) if baseline is not None else None
        if line is not None:
            lines.append(line)
    ensembles = [line for g in groups if "ensemble" in g.settings and g.cells
                 for line in [_ensemble_line(g, groups)] if line]
    parts = _combination_lines(groups)
    gains = _gain_lines(groups)
    if not lines and not ensembles and not parts:
        return [Paragraph("No comparison with vanilla: the study has no finished vanilla cells beside other defenses.")]
    blocks: list[Block] = []
    if lines:
        blocks += [Items(lines), Paragraph("The interval is the 95% interval of the mean difference over seeds that "
                                           "both finished (paired: the same seed gives the same split and "
                                           "initialisation).")]
    if gains:
        blocks += [Items(gains), Paragraph(
            "Does a defense's gain depend on the other settings (the network, the training estimator)? Its gain "
            "over the vanilla of the same settings, compared between two settings, paired by seed.")]
    if parts:
        blocks += [Items(parts), Paragraph("A combined defense against each defense it combines, paired by seed: "
                                           "worst case and clean accuracy differences with their 95% intervals.")]
    if ensembles:
        blocks += [Items(ensembles), Paragraph(
            "An ensemble is one model, so its interval is the 95% Wilson interval over its test images, not over "
            "seeds; its members' is over their seeds. 'within' means the two intervals overlap: undecided.")]
    return blocks


def _paired_text(group: Group, other: Group, key: str) -> str | None:
    ours, theirs = group.by_seed(key), other.by_seed(key)
    seeds = sorted(set(ours) & set(theirs), key=str)
    if not seeds:
        return None
    mean, half = mean_interval([ours[s] - theirs[s] for s in seeds])
    if half is None:
        return f"{100 * mean:+.1f} points (1 seed, no interval)"
    word = "higher" if mean - half > 0 else "lower" if mean + half < 0 else "undecided"
    return f"{100 * mean:+.1f} points [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}] over {len(seeds)} seeds: {word}"


def _gain_lines(groups: list[Group]) -> list[str]:
    """For two groups of one defense under different other settings, each with its own vanilla: the
    difference of their worst-case gains over vanilla, per seed, with its 95% interval."""
    def gains(group: Group, vanilla: Group) -> dict:
        ours, theirs = group.by_seed("worst_case"), vanilla.by_seed("worst_case")
        return {seed: ours[seed] - theirs[seed] for seed in ours if seed in theirs}

    defended = []
    for g in groups:
        vanilla = matching_vanilla(g, groups)
        if g.settings.get("defense") not in (None, "vanilla") and g.cells and vanilla is not None:
            defended.append((g, gains(g, vanilla)))
    lines = []
    for i, (a, gain_a) in enumerate(defended):
        for b, gain_b in defended[i + 1:]:
            if a.settings.get("defense") != b.settings.get("defense") or other_settings(a) == other_settings(b):
                continue
            seeds = sorted(set(gain_a) & set(gain_b), key=str)
            if len(seeds) < 2:
                continue
            mean, half = mean_interval([gain_a[s] - gain_b[s] for s in seeds])
            half = half or 0.0
            word = ("larger" if mean - half > 0 else "smaller" if mean + half < 0 else "undecided (the interval "
                    "spans 0)")
            lines.append(f"gain of {a.label} over its vanilla minus that of {b.label}: {100 * mean:+.1f} points "
                         f"[{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}] over {len(seeds)} seeds: {word}.")
    return lines


def _combination_lines(groups: list[Group]) -> list[str]:
    from spikeguard.defenses.registry import DEFENSES

    lines = []
    for group in groups:
        defense = str(group.settings.get("defense"))
        if defense not in DEFENSES or not group.cells or "ensemble" in group.settings:
            continue
        for part in DEFENSES.facts(defense).get("combines", ()):
            other = next((g for g in groups if g.settings.get("defense") == part and g.cells
                          and "ensemble" not in g.settings and other_settings(g) == other_settings(group)), None)
            if other is None:
                continue
            robust, clean = _paired_text(group, other, "worst_case"), _paired_text(group, other, "clean")
            if robust is not None:
                lines.append(f"{group.label} against {other.label}: worst case {robust}; clean {clean}.")
    return lines


def _ensemble_line(ensemble: Group, groups: list[Group]) -> str | None:
    """The ensemble's worst case beside its members' (the group of the same settings without 'ensemble')."""
    from scipy.stats import binomtest

    selector = {k: v for k, v in ensemble.settings.items() if k != "ensemble"}
    members = next((g for g in groups if "ensemble" not in g.settings and g.cells
                    and all(g.settings.get(k) == v for k, v in selector.items())), None)
    numbers = ensemble.cells[0]["numbers"]
    n = numbers["evaluations"][0].get("n") or 0
    if members is None or not n:
        return None
    worst = numbers["worst_case"]
    ci = binomtest(round(worst * n), n).proportion_ci(method="wilson")
    mean, half = mean_interval(members.values("worst_case"))
    low, high = mean - (half or 0.0), mean + (half or 0.0)
    where = ("above its members' interval" if ci.low > high else "below its members' interval" if ci.high < low
             else "within reach of its members' (undecided)")
    return (f"{ensemble.label}: worst case {100 * worst:.1f}% [{100 * ci.low:.1f}, {100 * ci.high:.1f}] on {n} test "
            f"images, clean {100 * numbers['clean']:.1f}%; its {len(members.cells)} members alone: "
            f"{cell_text(members.values('worst_case'), True)}, clean {cell_text(members.values('clean'), True)}: "
            f"{where}.")


def _headline_numbers(groups: list[Group]) -> list[Block]:
    """Each group's clean and headline worst-case accuracy, whatever the verdict could say."""
    rows = [[g.label, f"{len(g.cells)} of {g.planned}", cell_text(g.values("clean"), True),
             cell_text(g.values("worst_case"), True)] for g in groups]
    blocks: list[Block] = [Table(["cells", "finished", "clean %", "worst case %"], rows)]
    if any(len(g.cells) == 1 and "ensemble" not in g.settings for g in groups):
        blocks.append(Paragraph("(n=1): one finished seed, so no interval is possible for that group."))
    return blocks


def _attack_columns(groups: list[Group], suite: str) -> list[str]:
    """The FGSM and PGD-k columns of ``suite``'s evaluations that finished cells hold."""
    found = (k.split("@")[0] for g in groups for c in g.cells for k in flat_numbers(c["numbers"])
             if k.endswith(f"@{suite}") and k.split("@")[0] not in ("worst_case", "clean"))
    return ordered_columns(found)


def _attack_texts(group: Group, columns: list[str], suite: str) -> dict[str, str]:
    return {c: cell_text(group.values(f"{c}@{suite}"), True) for c in columns}


def _paper_table(groups: list[Group], suites: list[str]) -> list[Block]:
    """Clean, the published protocol's attacks and worst case, and the strong suite's worst case."""
    columns = _attack_columns(groups, PAPER_SUITE)
    rows = [PaperRow([g.label, f"{len(g.cells)} of {g.planned}"], cell_text(g.values("clean"), True),
                     _attack_texts(g, columns, PAPER_SUITE),
                     [cell_text(g.values(f"worst_case@{PAPER_SUITE}"), True),
                      cell_text(g.values(f"worst_case@{STRONG_SUITE}"), True)]) for g in groups]
    missing = [s for s in (PAPER_SUITE, STRONG_SUITE) if s not in suites]
    note = ("The published protocol is the `paper` suite (FGSM and PGD under the four published estimators); "
            "the strong suite adds the full estimator bank, APGD and Square: it can only be lower.")
    if missing:
        note += f" {ABSENT} in a worst-case column: the plan does not evaluate with the {' or '.join(missing)} suite."
    return [paper_table(["cells", "finished"], rows, ["worst case (published protocol)", "worst case (strong suite)"]),
            Paragraph(note)]


def _fgsm_pgd(groups: list[Group], suites: list[str]) -> list[Block]:
    suite = next((s for s in dict.fromkeys((PAPER_SUITE, *suites)) if _attack_columns(groups, s)), None)
    if suite is None:
        return [Paragraph(f"{ABSENT}: no evaluation of the plan runs FGSM or PGD (the paper suite does).")]
    columns = _attack_columns(groups, suite)
    rows = [PaperRow([g.label], cell_text(g.values("clean"), True), _attack_texts(g, columns, suite), [])
            for g in groups]
    return [paper_table(["cells"], rows, []),
            Paragraph(f"From the `{suite}` suite's evaluation; each attack alone on every clean-correct sample, worst "
                      "case over that suite's estimators.")]


def _trade_offs(groups: list[Group], study_dir: Path) -> list[Block]:
    header = ["cells", *(label for _, label, _ in TRADE_OFF)]
    rows = [[g.label, *(cell_text(g.values(key), percent) for key, _, percent in TRADE_OFF)] for g in groups]
    blocks: list[Block] = [
        Table(header, rows),
        Paragraph("Gradient statistics: from the analysis (test samples, the model's training estimator) where the "
                  "plan analyses, else from training (a fixed validation batch at the best epoch). Firing rate and "
                  "energy need the analysis.")]
    figure = trade_off_figure(groups, study_dir / FIGURES / "tradeoff.png", cols=2)  # readable on a page
    if figure is not None:
        blocks.append(Figure(figure, "Trade-offs across lambda: mean over seeds, bars and bands are 95% intervals; "
                                     "defenses without lambda are horizontal lines"))
    return blocks


def _cells(study: dict) -> list[Block]:
    rows = []
    for cell in study["cells"]:
        n = cell.get("numbers") or {}
        seconds = sum((cell.get("timing") or {}).values())
        rows.append([cell["id"], cell["status"], pct(n.get("clean")), pct(n.get("worst_case")),
                     f"{seconds:.0f}" if seconds else ABSENT, cell.get("reason", "")])
    return [Table(["cell", "status", "clean", "worst case", "seconds", "reason"], rows)]


def write_summary(study_dir: Path) -> tuple[Path, Path]:
    """DIR/summary.md and DIR/summary.html (figures embedded), after bringing study.json up to date with the
    cells' records."""
    study_dir = Path(study_dir)
    if (study_dir / PLAN).is_file():  # cells that ran elsewhere (Slurm jobs) since study.json was written
        from spikeguard.study.cell import cell_numbers  # finished cells' numbers read again from their files

        write_study(study_dir, read_plan(study_dir), cell_numbers)
    blocks = build(study_dir)
    markdown, page = study_dir / "summary.md", study_dir / "summary.html"
    write_text(markdown, render_markdown(blocks, study_dir))
    write_text(page, render_html(blocks))
    return markdown, page
