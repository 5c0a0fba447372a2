"""Studies: a grid of training runs, each evaluated and analysed, on one machine or a cluster, and their
aggregation over seeds (plan.py, state.py, cell.py, executors.py, run.py, summary.py)."""

from spikeguard.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(globals(), {
    "StudyPlan": "spikeguard.study.plan", "load_plan": "spikeguard.study.plan",
    "run_study": "spikeguard.study.run", "write_summary": "spikeguard.study.summary",
})
