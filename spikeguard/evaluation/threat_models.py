"""Threat models: what an attacker may change, recorded in every results.json under ``threat_model``.

- ``linf``: images [N, C, H, W] in [0, 1]; every pixel moves by at most eps.
- ``frames-linf``: event frames [N, T, 2, S, S] with values min(count, R) / R; every bin moves by at most
  eps (eps relative to the frame range R: eps * R events per bin), clamped to [0, 1] = [0, R] events.
- ``events-l0``: event frames; per sample at most ``budget`` whole events added or removed (integer count
  changes, value steps of exactly 1/R), counts in [0, R], saturated bins (value 1.0) untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeguard.attacks.registry import ATTACKS, is_event_attack
from spikeguard.errors import UserError
from spikeguard.evaluation.config import THREAT_MODELS

NOT_COVERED = ("event timing within a frame (moving an event inside its time bin changes no frame), events "
               "outside the binning (at coordinates or times the frames do not see), edits to saturated bins, "
               "and sensor-level limits on event rate or refractory period")


@dataclass(frozen=True)
class ThreatModel:
    name: str = "linf"
    eps: float | None = None
    budget: int | None = None       # events-l0: events changed per sample
    frame_range: int | None = None  # R: frame value 1.0 = R events in a bin

    @property
    def events(self) -> bool:
        return self.name == "events-l0"

    def describe(self) -> dict:
        """The mapping results.json stores: the name, its parameters, and in words what they mean."""
        if self.name == "linf":
            return {"name": "linf", "eps": self.eps,
                    "meaning": f"l-inf ball of radius eps={self.eps:.6g} around each image in [0, 1] pixel scale, "
                               "clamped to [0, 1]"}
        r = self.frame_range
        if self.name == "frames-linf":
            assert self.eps is not None and r is not None  # make_threat_model sets both for frames-linf
            return {"name": "frames-linf", "eps": self.eps, "frame_range": r, "eps_events_per_bin": self.eps * r,
                    "meaning": f"eps={self.eps:.6g} is relative to the frame range R={r} events per bin: every "
                               f"(frame, polarity, pixel) bin may change by at most eps*R={self.eps * r:.6g} events "
                               f"(a real-valued change, not whole events); frames clamped to [0, 1] = [0, R] "
                               "events (no negative counts, saturation at R)"}
        return {"name": "events-l0", "budget": self.budget, "frame_range": r,
                "meaning": f"per sample at most {self.budget} whole events added or removed (the sum over bins "
                           f"of |count change|; one event is a value step of exactly 1/R with R={r}); counts stay "
                           "in [0, R]; saturated bins (value 1.0, true count unknown) are never changed; the "
                           "evaluation's eps is not used",
                "not_covered": NOT_COVERED}

    def _check_budgets(self, suite) -> None:
        """The recorded budget must be what was attacked: no attack may spend more, and a white-box attack
        must spend all of it (attacks with smaller budgets may join the worst case; they cannot replace it)."""
        full = False
        for spec in suite.attacks:
            own = spec.params.get("budget")
            if own is not None and own > self.budget:
                raise UserError(f"attack '{spec.label}' has budget {own}, above the threat model's {self.budget} "
                                "events; raise --budget or lower the attack's")
            full |= spec.white_box and own in (None, self.budget)
        if not full:
            raise UserError(f"no white-box event attack of the suite ({', '.join(event_attacks(gradient=True))}) "
                            f"spends the whole budget of {self.budget} events, so the result would not bound "
                            "robustness at that budget; drop the attacks' own budgets")

    def check_sample(self, sample) -> None:
        """Images (3-D samples) for linf, event frames [T, C, H, W] for the other two."""
        frames = sample.dim() == 4
        if self.name == "linf" and frames:
            raise UserError(f"the data are event frames {tuple(sample.shape)}; choose the threat model frames-linf "
                            "or events-l0, not linf")
        if self.name != "linf" and not frames:
            raise UserError(f"the {self.name} threat model needs event frames [T, 2, S, S] per sample; the data "
                            f"are {sample.dim()}-D images {tuple(sample.shape)}")


def event_attacks(**where) -> tuple[str, ...]:
    """The attack kinds of events-l0 (whole-event edits), and only of it."""
    return tuple(name for name in ATTACKS.names(**where) if is_event_attack(name))


def check_suite(suite, threat: ThreatModel | None, transfer: bool = False) -> None:
    """Event attacks only under events-l0, and only event attacks there; their budgets fit the threat
    model's (one-line UserError). ``threat`` None: l-inf attacks on whatever shape the data have."""
    events = threat is not None and threat.events
    name = threat.name if threat is not None else "linf"
    for spec in suite.attacks:
        if events and not is_event_attack(spec.attack):
            raise UserError(f"attack '{spec.label}' ({spec.attack}) is an l-inf attack; the events-l0 threat "
                            f"model takes only {', '.join(event_attacks())} (suite 'events')")
        if not events and is_event_attack(spec.attack):
            raise UserError(f"attack '{spec.label}' ({spec.attack}) edits whole events; it needs the events-l0 "
                            f"threat model, not {name}")
    if events and transfer:
        raise UserError("--source (a transfer attack) crafts l-inf examples; it does not apply under events-l0")
    if threat is not None and threat.events:
        threat._check_budgets(suite)


def event_budget(spec, threat: ThreatModel | None) -> int:
    """An event attack's budget: its own, else the evaluation's (events-l0)."""
    if threat is None or not threat.events:
        raise UserError(f"attack '{spec.label}' edits whole events; it needs the events-l0 threat model")
    own = spec.params.get("budget")
    assert threat.budget is not None  # make_threat_model gives events-l0 a budget
    return own if own is not None else threat.budget


def make_threat_model(name: str = "linf", *, eps: float | None = None, budget: int | None = None,
                      frame_range: int | None = None) -> ThreatModel:
    """A validated threat model; one-line UserError for a bad name or a missing or misplaced parameter."""
    if name not in THREAT_MODELS:
        raise UserError(f"unknown threat model '{name}'; choose from {', '.join(THREAT_MODELS)}")
    if budget is not None and name != "events-l0":
        raise UserError(f"an event budget applies to the events-l0 threat model only, not {name}")
    if frame_range is not None and (isinstance(frame_range, bool) or not isinstance(frame_range, int)
                                    or frame_range < 1):
        raise UserError(f"the frame range must be an integer >= 1 (events per bin at value 1.0), got {frame_range!r}")
    if name == "linf":
        if frame_range is not None:
            raise UserError(f"the data are event frames (frame range R={frame_range}); choose the threat model "
                            "frames-linf or events-l0, not linf")
        return ThreatModel("linf", eps=eps)
    if frame_range is None:
        raise UserError(f"the {name} threat model needs the data set's frame range R (events per bin at value 1.0)")
    if name == "frames-linf":
        return ThreatModel("frames-linf", eps=eps, frame_range=frame_range)
    if budget is None:
        raise UserError("the events-l0 threat model needs an event budget (--budget K)")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UserError(f"the event budget must be an integer >= 1 (events per sample), got {budget!r}")
    return ThreatModel("events-l0", budget=budget, frame_range=frame_range)


def threat_from_record(record: dict | None, eps: float | None = None) -> ThreatModel:
    """The threat model a results.json recorded (linf when the file predates threat models)."""
    if not record:
        return ThreatModel("linf", eps=eps)
    if not isinstance(record, dict):
        raise UserError(f"the stored threat_model is not a mapping: {record!r}")
    return make_threat_model(str(record.get("name", "linf")), eps=record.get("eps", eps),
                             budget=record.get("budget"), frame_range=record.get("frame_range"))
