"""`spikeguard analyze`: the theory's quantities measured on one model (docs/theory.md).

``analyze_model`` works on any module mapping [0, 1] images to logits and tensors the caller supplies;
``analyze_checkpoint`` loads a spikeguard checkpoint and its test split, picks the attack and writes
analysis.json, per_sample.csv and figures.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from spikeguard.adapters import has_external_neurons
from spikeguard.analysis.activity import ENERGY_CONSTANTS, measure_activity
from spikeguard.analysis.gap import Attack, draw_directions, gap_at_eps, summarize_gap
from spikeguard.analysis.gradients import (
    SMALL_TOLERANCE,
    cauchy_schwarz_violations,
    first_order,
    gradient_norms,
    probability_gradient,
)
from spikeguard.analysis.mechanism import (
    POINTS,
    flip_summary,
    measure_batch,
    summarize_point,
    surrogate_zeros,
)
from spikeguard.analysis.min_eps import (
    attack_flips,
    bisect_min_eps,
    noise_flips,
    summarize_min_eps,
)
from spikeguard.attacks import pgd
from spikeguard.errors import UserError
from spikeguard.files import write_json, write_text
from spikeguard.locks import is_lock_file
from spikeguard.rundir import BEST, CONFIG, LAST, METRICS, label_for, load_splits, read_metrics, run_directory
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.schema import EvalRecord, read_results
from spikeguard.snn import estimator as use_estimator
from spikeguard.snn import is_spiking, spiking_layers

FORMAT = "spikeguard-analysis"
LIBRARY_SURROGATE = "the library's own surrogate (SpikingJelly / snnTorch neurons)"
LIBRARY_NOTE = ("the other estimators (triangle:4, bptr) and --estimator drive spikeguard's own neurons only: this "
                "model's SpikingJelly / snnTorch neurons keep their own surrogate, so one estimator is measured")
PGD_STEPS = 20  # the fallback attack: PGD-20, step 2.5 * eps / 20, random start


@dataclass(frozen=True)
class AnalysisSettings:
    eps: tuple[float, ...]
    n: int = 100                     # the first n test samples
    draws: int = 20                  # random directions per sample (uniform and signs each)
    seed: int = 0
    estimator: str | None = None     # None: the model's own (its training estimator)
    tolerance: float = SMALL_TOLERANCE
    eps_max: float = 1.0             # bisection range (0, eps_max] for random noise
    attack_eps_max: float | None = None  # ... and for the attack; None: min(eps_max, 4 * max(eps))
    bisect_steps: int = 6
    batch_size: int = 100

    def resolved(self) -> AnalysisSettings:
        eps = tuple(float(e) for e in self.eps)
        if not eps:
            raise UserError("the eps list is empty; give at least one positive eps")
        bad = [e for e in eps if not (math.isfinite(e) and e > 0)]
        if bad:
            raise UserError(f"every eps must be a positive number, got {bad[0]}")
        from spikeguard.config import check_linf_eps

        for e in eps:
            check_linf_eps(e)
        for name in ("n", "draws", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.bisect_steps < 0:
            raise UserError(f"bisection steps must be at least 0, got {self.bisect_steps}")
        attack_max = self.attack_eps_max if self.attack_eps_max is not None else min(self.eps_max, 4 * max(eps))
        for name, value in (("eps_max", self.eps_max), ("attack eps_max", attack_max)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number, got {value}")
        if not (0 <= self.tolerance < 1):
            raise UserError(f"tolerance must lie in [0, 1), got {self.tolerance}")
        return replace(self, eps=tuple(sorted(set(eps))), attack_eps_max=float(attack_max))


def parse_eps_list(values: list[str]) -> tuple[float, ...]:
    """``["0.1", "8/255,0.2"]`` -> (0.1, 0.0314, 0.2): repeated flags and comma lists both work."""
    from spikeguard.config import coerce_field

    items = [item.strip() for value in values for item in str(value).split(",")]
    if not values or all(not item for item in items):
        raise UserError("the eps list is empty; give at least one positive eps")
    if any(not item for item in items):
        raise UserError(f"the eps list {','.join(values)!r} has an empty entry")
    return AnalysisSettings(eps=tuple(coerce_field("eps", item, "float") for item in items)).resolved().eps


def fallback_attacks(seed: int) -> tuple[Callable[[float], Attack], Callable[[float], Attack], dict]:
    """PGD-20 from spikeguard.attacks under the model's current estimator, with an explicit generator.
    For the drop of f the last iterate is kept (deepest in the loss); for flips, the first misclassified
    iterate (keep_best), which can only flip more samples."""
    generator = torch.Generator().manual_seed(seed + 7919)  # a stream apart from the noise's

    def make(keep_best: bool) -> Callable[[float], Attack]:
        def at(eps: float) -> Attack:
            return lambda model, x, y: pgd(model, x, y, eps, 2.5 * eps / PGD_STEPS, PGD_STEPS, random_start=True,
                                           generator=generator, keep_best=keep_best)
        return at

    info = {"name": f"pgd-{PGD_STEPS}", "steps": PGD_STEPS, "alpha": f"2.5 * eps / {PGD_STEPS}",
            "random_start": True, "estimators": "the analysed estimator only",
            "note": "fallback: spikeguard.evaluation.strongest_examples is not available, so this is weaker "
                    "than the quick suite's per-sample strongest example"}
    return make(False), make(True), info


def suite_attacks(seed: int, suite: str = "quick") -> tuple[Callable[[float], Attack], Callable[[float], Attack], dict]:
    """The per-sample strongest example of the evaluator's suite."""
    from spikeguard.evaluation import strongest_examples

    generator = torch.Generator().manual_seed(seed + 7919)

    def at(eps: float) -> Attack:
        return lambda model, x, y: strongest_examples(model, x, y, eps, suite=suite, generator=generator)

    info = {"name": f"strongest of the '{suite}' suite", "suite": suite,
            "note": "per sample, the example that lowers the true-class probability most across the suite's "
                    "gradient attacks and estimators"}
    return at, at, info


def _estimator_block(model: nn.Module, name: str | None):
    if name is None or not is_spiking(model):
        return contextlib.nullcontext()
    return use_estimator(model, name)


def analyze_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: AnalysisSettings,
                  attack_at: Callable[[float], Attack], flip_attack_at: Callable[[float], Attack] | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[dict, list[dict]]:
    """(aggregate, per-sample rows) for the samples x, y. ``attack_at(eps)`` returns the attack whose drop
    of f is rho_adv; ``flip_attack_at`` (default: the same) is bisected for the minimal eps. SpikingJelly /
    snnTorch neuron state is reset before every forward pass and restored afterwards."""
    from spikeguard.adapters import stateless

    with stateless(model) as fresh:
        return _analyze_model(fresh, x, y, settings, attack_at, flip_attack_at, progress)


def _analyze_model(model, x, y, settings, attack_at, flip_attack_at, progress) -> tuple[dict, list[dict]]:
    s = settings.resolved()
    require_deterministic(model, x[: s.batch_size])
    flip_attack_at = flip_attack_at or attack_at
    say = progress or (lambda _: None)
    noise_gen = torch.Generator().manual_seed(s.seed)
    per_eps: dict[float, dict[str, list[torch.Tensor]]] = {e: {} for e in s.eps}
    fo_eps: dict[float, dict[str, list[torch.Tensor]]] = {e: {} for e in s.eps}
    norms_parts: dict[str, list[torch.Tensor]] = {}
    min_adv, min_rand = [], []
    mechanism: dict[str, dict[str, dict[str, list[torch.Tensor]]]] = {}  # estimator -> point -> quantity -> parts
    spiking = is_spiking(model)  # an ANN (also one trained with --network ann) has its exact gradient only
    library = not spiking and has_external_neurons(model)  # SpikingJelly / snnTorch neurons: their own surrogate
    est_name = ((s.estimator or spiking_layers(model)[0].estimator.name) if spiking
                else LIBRARY_SURROGATE if library else "exact (no spiking layers)")
    with _estimator_block(model, s.estimator):
        # per spiking layer and estimator, the exactly-zero derivatives on the first batch (a library neuron's
        # are listed as unmeasured, with the reason)
        zeros = surrogate_zeros(model, x[: s.batch_size], est_name)
        dead = {"estimator": est_name, "samples": int(x[: s.batch_size].shape[0]),
                **zeros[est_name]} if zeros else None
        for start in range(0, x.shape[0], s.batch_size):
            xb, yb = x[start:start + s.batch_size], y[start:start + s.batch_size]
            say(f"samples {start}..{start + xb.shape[0] - 1}: gradient")
            g, _ = probability_gradient(model, xb, yb)
            _extend(norms_parts, gradient_norms(g, s.tolerance))
            uniform, signs = draw_directions(xb, s.draws, noise_gen)
            for e in s.eps:
                say(f"samples {start}..: gap at eps {e:g}")
                gap = gap_at_eps(model, xb, yb, e, attack_at(e), uniform, signs)
                x_adv = gap.pop("x_adv")
                _extend(per_eps[e], gap)
                _extend(fo_eps[e], first_order(g, xb, e))
                if e == s.eps[0]:  # the mechanism at the first eps: clean, half-step and attack points
                    say(f"samples {start}..: f and margin gradients at 3 points")
                    for name, points in measure_batch(model, xb, yb, x_adv, e, est_name).items():
                        for point, values in points.items():
                            _extend(mechanism.setdefault(name, {}).setdefault(point, {}), values)
            say(f"samples {start}..: minimal eps by bisection")
            wrong = per_eps[s.eps[0]]["correct_clean"][-1].logical_not().cpu()
            min_adv.append(bisect_min_eps(attack_flips(model, xb, yb, flip_attack_at), xb.shape[0],
                                          s.attack_eps_max, s.bisect_steps, wrong))
            min_rand.append(bisect_min_eps(noise_flips(model, xb, yb, uniform), xb.shape[0], s.eps_max,
                                           s.bisect_steps, wrong))
    norms = {k: torch.cat(v) for k, v in norms_parts.items()}
    gaps = {e: {k: torch.cat(v).cpu() for k, v in d.items()} for e, d in per_eps.items()}
    fos = {e: {k: torch.cat(v).cpu() for k, v in d.items()} for e, d in fo_eps.items()}
    adv_eps, rand_eps = torch.cat(min_adv), torch.cat(min_rand)
    decomposed = {name: {point: {k: torch.cat(v).cpu() for k, v in values.items()} for point, values in points.items()}
                  for name, points in mechanism.items()}
    first = gaps[s.eps[0]]
    own = decomposed[est_name]["clean"]
    say("activity")
    activity = measure_activity(model, x, s.batch_size) if spiking else _no_activity(model, x, s.batch_size)
    summary = {
        "format": FORMAT, "n": int(x.shape[0]), "eps": list(s.eps), "draws": s.draws, "seed": s.seed,
        "estimator": est_name,
        "per_eps": [{"eps": e, **summarize_gap(gaps[e]), "first_order": _first_order_summary(fos[e])} for e in s.eps],
        "gradient": _gradient_summary(norms, est_name, s.tolerance, x[0].numel()),
        "min_eps": summarize_min_eps(adv_eps, rand_eps, s.attack_eps_max, s.eps_max, s.bisect_steps),
        "dead_surrogates": dead,
        "mechanism": {
            "eps": s.eps[0], "batchnorm": "eval (running statistics)", "training_estimator": est_name,
            **({"not_measured": LIBRARY_NOTE} if library else {}),
            "points": {"clean": "x", "half_step": "x - (eps/2) sign(df/dx), the training estimator's, in [0, 1]",
                       "attack_end": "the attack's point (the lower f of it and x)"},
            "estimators": {name: {point: summarize_point(points[point]) for point in POINTS}
                           for name, points in decomposed.items()},
            "surrogate_zeros": zeros,
            "flip": flip_summary(own["flip_distance"], decomposed[est_name]["half_step"]["flip_distance"], adv_eps,
                                 first["correct_adv"], first["correct_clean"], s.eps[0]),
        },
        **activity,
    }
    return summary, _rows(y, s.eps, gaps, fos, norms, adv_eps, rand_eps, own)


@torch.no_grad()
def require_deterministic(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse a stochastic model (e.g. Poisson encoding): one draw of f per input would make every drop
    partly noise, and this analysis has no expectation over draws."""
    with eval_mode(model), forked_rng(x.device):
        if not torch.equal(model(x), model(x)):
            raise UserError("the model is stochastic (two forward passes differ); the analysis has no "
                            "expectation over draws, so it refuses")


def _extend(store: dict[str, list[torch.Tensor]], values: dict[str, torch.Tensor]) -> None:
    for k, v in values.items():
        store.setdefault(k, []).append(v)


def _no_activity(model: nn.Module, x: torch.Tensor, batch_size: int) -> dict:
    """A model without spiking layers: no firing rates or SOPs. spikeguard's ANN twin (ReLU-mode IFNeurons,
    trained with --network ann) still has its MACs counted: its energy is the ANN energy."""
    if spiking_layers(model):
        counted = measure_activity(model, x, batch_size)
        return {**counted, "layers": [], "sops_total": 0.0,
                "note": "ANN (ReLU units in place of spiking neurons): firing rates and SOPs do not apply; "
                        "every layer does multiply-accumulates, so its energy is the ANN energy"}
    return {"layers": [], "sops_total": 0.0, "analog_macs": None, "ann_macs": None, "energy_joules": None,
            "ann_energy_joules": None, "energy_constants": dict(ENERGY_CONSTANTS),
            "note": "the model has no spiking layers: no activity or energy to measure"}


def _mean(t: torch.Tensor) -> float:
    return t.double().mean().item()


def _first_order_summary(fo: dict[str, torch.Tensor]) -> dict:
    return {"adv": _mean(fo["adv"]), "adv_box": _mean(fo["adv_box"]),
            "sign_abs": [_mean(fo["sign_low"]), _mean(fo["sign_high"])],
            "rand_abs": [_mean(fo["rand_low"]), _mean(fo["rand_high"])]}


def _gradient_summary(norms: dict[str, torch.Tensor], est_name: str, tolerance: float, dims: int) -> dict:
    l1, l2, sqrt_l0 = norms["l1"].sum().item(), norms["l2"].sum().item(), norms["sqrt_l0"]
    # l2-weighted mean of sqrt(l0): sum l1 / sum l2 <= this by Cauchy-Schwarz per sample (theory.md, 5)
    weighted = (sqrt_l0 * norms["l2"]).sum().item() / l2 if l2 > 0 else None
    out = {"estimator": est_name, "tolerance": tolerance, "tolerance_rule": "|g_i| <= tolerance * max_j |g_j|",
           "dims": dims, **{k: _mean(v) for k, v in norms.items()},
           "zero_gradient_samples": int((norms["l0"] == 0).sum()),
           "cauchy_schwarz_violations": cauchy_schwarz_violations(norms)}
    if l2 > 0 and weighted is not None:
        out["first_order_ratio_abs"] = [math.sqrt(3) * l1 / l2, 2 * math.sqrt(2) * l1 / l2]
        out["first_order_ratio_sign_abs"] = [l1 / l2, math.sqrt(2) * l1 / l2]
        out["sparsity_bound_rand"] = 2 * math.sqrt(2) * weighted
        out["sparsity_bound_sign"] = math.sqrt(2) * weighted
    return out


def _rows(y, eps, gaps, fos, norms, adv_eps, rand_eps, own) -> list[dict]:
    rows = []
    margin = {k: own[k].tolist() for k in ("m_l1", "m_l2", "f_one_minus_f", "flip_distance")}
    for e in eps:
        cols = {**gaps[e], **{f"first_order_{k}": v for k, v in fos[e].items() if k in ("adv", "adv_box")}}
        table = {k: v.tolist() for k, v in cols.items()}
        grad = {f"grad_{k}": norms[k].tolist() for k in ("zero_fraction", "small_fraction", "l0", "l1", "l2",
                                                         "effective_support")}
        for i in range(len(y)):
            rows.append({"index": i, "label": int(y[i]), "eps": e,
                         **{k: _cell(v[i]) for k, v in table.items()},
                         **{k: v[i] for k, v in grad.items()},
                         "grad_m_l1": margin["m_l1"][i], "grad_m_l2": margin["m_l2"][i],
                         "f_one_minus_f": margin["f_one_minus_f"][i], "flip_distance": margin["flip_distance"][i],
                         "min_eps_adv": adv_eps[i].item(), "min_eps_rand": rand_eps[i].item()})
    return rows


def _cell(v):
    return int(v) if isinstance(v, bool) else v


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text; inf (never flipped within eps_max) is written as 'inf'."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["index"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ---- from a checkpoint -------------------------------------------------------------------------------

def prepare_output_dir(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(not is_lock_file(p.name) for p in out.iterdir())):
        raise UserError(f"output '{out}' already exists and is not an empty directory; choose a new --out")
    return out


def check_results_match(results_path: str | Path, checkpoint: str | Path, arch_name: str, dataset: str) -> EvalRecord:
    """The results file (any version, read through the schema), after checking it describes this checkpoint's
    model; UserError else."""
    path = Path(results_path)
    if not path.is_file():
        raise UserError(f"results file '{path}' does not exist")
    results = read_results(path)
    found = (results.model, results.dataset)
    if found != (arch_name, dataset):
        raise UserError(f"results file '{path}' is for model '{found[0]}' on '{found[1]}', but the checkpoint "
                        f"holds '{arch_name}' on '{dataset}'")
    recorded = results.checkpoint
    run = run_directory(checkpoint).resolve()
    if recorded and run_directory(recorded).resolve() != run:
        raise UserError(f"results file '{path}' was computed on checkpoint '{recorded}', not '{checkpoint}'")
    home = path.parent.resolve()
    if home != run and any((home / name).exists() for name in (CONFIG, BEST, LAST)):
        raise UserError(f"results file '{path}' sits in another run directory ('{home}') than the checkpoint "
                        f"('{run}')")
    return results


def evaluation_record(results: EvalRecord, path: Path) -> dict:
    return {"file": str(path), "suite": results.suite, "eps": results.eps, "n": results.n,
            "clean_accuracy": results.clean_accuracy, "ensemble_accuracy": results.ensemble_accuracy,
            "attacks": {a.name: a.accuracy for a in results.attacks}}


def analyze_checkpoint(checkpoint: str | Path, settings: AnalysisSettings | None, out: str | Path,
                       results: str | Path | None = None, device: str = "cpu", data_dir: str | None = None,
                       progress: bool = True) -> dict:
    """Analyse a checkpoint (or a run directory's best.pt) on the first n test samples; write
    out/analysis.json, out/per_sample.csv and out/figures/*.png. ``settings.eps`` empty: the training eps."""
    from spikeguard.checkpoint import load_model, model_name
    from spikeguard.data import stack
    from spikeguard.data.class_coverage import missing_classes_note
    from spikeguard.figures import write_figures
    from spikeguard.runtime import pick_device

    out = prepare_output_dir(out)
    target = pick_device(device)
    model, ckpt = load_model(checkpoint)
    cfg = ckpt.get("config", {})
    arch, dataset = model_name(ckpt), ckpt["dataset"]
    if settings is None or settings.eps == ():
        if cfg.get("eps") is None:
            raise UserError("the checkpoint records no eps; pass --eps")
        settings = replace(settings or AnalysisSettings(eps=()), eps=(cfg["eps"],))
    settings = settings.resolved()
    evaluation = None
    if results is not None:
        evaluation = evaluation_record(check_results_match(results, checkpoint, arch, dataset), Path(results))
    data = load_splits(ckpt, data_dir)
    x, y = stack(data.test, settings.n)
    notes = [note] if (note := missing_classes_note(settings.n, data.test)) is not None else []
    model = model.to(target)
    attack_at, flip_at, attack_info = suite_attacks(settings.seed)
    say = (lambda msg: print(f"analyze: {msg}", flush=True)) if progress else None
    if say is not None:  # notes said before the work: a user can stop a run that would describe one class
        for note in notes:
            say(f"note: {note}")
    start = time.perf_counter()
    with forked_rng(target):
        summary, rows = analyze_model(model, x.to(target), y.to(target), settings, attack_at, flip_at, say)
    run = run_directory(checkpoint)
    summary = {
        "format": FORMAT, "model": arch, "dataset": dataset, "checkpoint": str(checkpoint),
        "defense": cfg.get("defense"), "lamb": cfg.get("lamb"), "label": label_for(cfg, run),
        "split": "test", "attack": attack_info, **{k: v for k, v in summary.items() if k != "format"},
        "settings": asdict(settings), "evaluation": evaluation, "notes": notes, "per_sample": "per_sample.csv",
        "definitions": "docs/theory.md", "seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "per_sample.csv", rows_to_csv(rows))
    write_json(out / "analysis.json", summary)
    metrics = read_metrics(run / METRICS)
    figures = write_figures({summary["label"]: summary}, {summary["label"]: rows},
                            {summary["label"]: metrics} if metrics else {}, out / "figures")
    summary["figures"] = {k: str(p.relative_to(out)) for k, p in figures.items()}
    write_json(out / "analysis.json", summary)
    return summary
