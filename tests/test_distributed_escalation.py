"""Under torch.distributed the escalation runs once, on rank 0, and every rank ends with its outcome: the same
record and rows as one process (two gloo processes on the CPU, a model whose backward is zero)."""

import os
import socket

import torch
import torch.multiprocessing as mp
from lying_models import ZeroBackward, honest_classifier

from spikeguard.distributed import close_distributed, init_distributed
from spikeguard.evaluation import EvalConfig, Target, escalation, run_evaluation
from spikeguard.evaluation.suites import suite_from_dict

WORLD = 2
SUITE = {"name": "tiny", "checks": {"unbounded_n": 2, "unbounded_steps": 2},
         "escalation": {"decision_queries": 50, "substitute_epochs": 1, "substitute_queries": 64, "transfer_steps": 2, "estimate_steps": 2,
                        "estimate_directions": 4, "square_queries": 10, "square_restarts": 1},
         "attacks": [{"attack": "fgsm", "estimators": ["triangle:1"]}]}  # zero gradients: the escalation starts


def _evaluate(model, digits):
    config = EvalConfig(suite=suite_from_dict(SUITE), eps=0.1, n=6, batch_size=3, progress=False)
    return run_evaluation(config, Target.of(model, digits.test, 10, train=digits.train))


def _worker(rank, port, model, digits, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    calls = []
    real = escalation.escalate

    def counted(*args, **kwargs):
        calls.append(rank)
        return real(*args, **kwargs)

    escalation.escalate = counted
    init_distributed("cpu")
    try:
        evaluation = _evaluate(model, digits)
        torch.save({"calls": len(calls), "results": evaluation.results, "rows": evaluation.rows},
                   out_dir / f"rank-{rank}.pt")
    finally:
        escalation.escalate = real
        close_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _comparable(results: dict) -> dict:
    """What must not depend on the number of processes (times and the rank count aside)."""
    skip = {"seconds", "ranks"}
    out = {k: v for k, v in results.items() if k not in skip}
    out["escalation"] = {k: v for k, v in results["escalation"].items() if k != "seconds"}
    out["escalation"]["substitute"] = {name: {k: v for k, v in facts.items() if k != "seconds"}
                                       for name, facts in results["escalation"]["substitute"].items()}
    out["probes"] = {name: {k: v for k, v in (probe or {}).items() if k != "seconds"}
                     for name, probe in results["probes"].items()}
    out["attacks"] = [{k: v for k, v in a.items() if k != "seconds"} for a in results["attacks"]]
    return out


def test_the_escalation_runs_once_on_rank_0_and_reaches_every_rank(tmp_path, digits, digits_tensors):
    (x, y), _ = digits_tensors
    model = ZeroBackward(honest_classifier(x, y, epochs=2))
    mp.spawn(_worker, args=(_free_port(), model, digits, tmp_path), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["calls"] for r in ranks] == [1, 0]
    single = _evaluate(model, digits)
    assert "escalation" in single.results and ranks[0]["results"]["ranks"] == WORLD
    for seen in ranks:
        assert seen["rows"] == single.rows
        assert _comparable(seen["results"]) == _comparable(single.results)


def test_the_escalation_does_not_depend_on_the_callers_random_state(digits, digits_tensors):
    # the substitute's initial weights once came from the global generator: what ran before the evaluation
    # changed the escalation's numbers
    (x, y), _ = digits_tensors
    model = ZeroBackward(honest_classifier(x, y, epochs=2))
    outcomes = []
    for seed in (0, 12345):
        torch.manual_seed(seed)
        evaluation = _evaluate(model, digits)
        outcomes.append((_comparable(evaluation.results), evaluation.rows))
    assert "escalation" in outcomes[0][0]
    assert outcomes[0] == outcomes[1]
