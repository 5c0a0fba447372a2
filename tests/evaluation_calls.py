"""The evaluation engine called the way many tests want it: a model, its test data, a suite and an eps,
with keyword settings. Each call builds the EvalConfig and Target that spikeguard's own entry points build,
so the tests exercise run_evaluation and run_suite exactly as the command line and the Python API do."""

from __future__ import annotations

from spikeguard.evaluation import EvalConfig, Target, run_evaluation, runner


def evaluate(model, dataset, suite, eps, *, num_classes, n=None, batch_size=256, seed=0, device="cpu", draws=None,
             source=None, eps_sweep=False, progress=True, threat_model=None, event_budget=None, frame_range=None):
    """(results, per-sample rows) of run_evaluation on an in-memory model."""
    config = EvalConfig(suite=suite, eps=eps, n=n, batch_size=batch_size, seed=seed, eot_draws=draws,
                        eps_sweep=eps_sweep, threat_model=threat_model, budget=event_budget, source=source,
                        device=device, progress=progress)
    record = run_evaluation(config, Target.of(model, dataset, num_classes, frame_range=frame_range))
    return record.results, record.rows


def run_suite(model, dataset, suite, eps, *, num_classes, n=None, batch_size=256, seed=0, device="cpu", draws=None,
              source=None, batches=None, progress=True, on_batch=None, threat=None):
    """The runner alone (no checks, no record): rows and run facts for the chosen batches."""
    plan = runner.Plan(model, dataset, suite, eps, num_classes, n=n, batch_size=batch_size, seed=seed, device=device,
                       draws=draws, source=source, threat=threat, progress=progress)
    rows, facts = runner.run_suite(plan, batches=batches, on_batch=on_batch)
    return [row.to_row() for row in rows], facts
