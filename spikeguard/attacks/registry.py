"""Attack kinds: each name, what the rest of spikeguard needs to know about it, and how to craft with it.

One lookup answers every question about an attack kind: suites read its parameters and defaults, the
runner how to call it, threat models which threat model it belongs to, the sanity flags whether it is
single-step, iterative, black-box or random. No other module keeps a list of attack names.

Facts (all plain data, readable without importing PyTorch):

- ``params``: the parameters a suite entry may set, with their defaults (``alpha``: a fraction of eps);
- ``gradient``: white-box (uses the input gradient); False for query, transfer and random attacks;
- ``estimators``: takes a list of backward estimators (every gradient attack does);
- ``norms``: the norms it supports; ``"events"`` for whole-event edits (events-l0 only);
- ``single_step`` / ``iterative``: compared by the iterative_weaker_than_single_step flag;
- ``random``: a random baseline (no optimisation; ``draws`` of it, scored per draw);
- ``library``: AutoAttack's own implementation, which reads C, H, W off an image batch (event frames are
  folded to [N, T*C, H, W] for it);
- ``min_classes``: targeted attacks need this many classes;
- ``in_suites``: False for ``transfer``, which a suite configures under ``transfer:``, not ``attacks:``;
- ``label``: the default label of a suite entry (format fields: the parameters);
- ``paper_column``: the column of the published protocol's table it fills (format fields: the parameters);
- ``class_name``: the name of its attack object in ``spikeguard.attacks`` (``PGD``; objects.py);
- ``passes``, ``pass_cost``, ``per_target``: how much work one run of it is, for the progress estimate
  only (:func:`unit_work`): the parameters whose product counts its model passes per sample, what one pass
  costs (a gradient step 1, a forward-only query 0.5), and whether it repeats per target class.

The target is a function ``craft(model, x, y, call) -> x_adv`` (one draw for random attacks), ``call``
an :class:`AttackCall`. ``register_attack`` adds a kind from anywhere (a test, a user's package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spikeguard.registry import Entry, Registry

ATTACKS = Registry("attack")


@dataclass(frozen=True)
class AttackCall:
    """Everything one crafting call may need besides the model and the batch."""

    eps: float                       # the radius in the attack's norm (unused by event attacks)
    params: dict[str, Any]           # the suite entry's parameters, defaults filled in
    norm: str = "linf"
    draws: int = 1                   # EoT draws for a stochastic model
    generator: Any = None            # torch.Generator for the attack's random choices
    num_classes: int = 10
    budget: int | None = None        # events-l0: events per sample
    frame_range: int | None = None   # events-l0: R, events per bin at frame value 1.0


def register_attack(name: str, craft: Callable | str, *, params: dict[str, Any] | None = None,
                    gradient: bool = True, norms: tuple[str, ...] = ("linf",), single_step: bool = False,
                    iterative: bool = False, random: bool = False, library: bool = False, min_classes: int = 1,
                    in_suites: bool = True, label: str | None = None, paper_column: str | None = None,
                    class_name: str | None = None, passes: tuple[str, ...] = (), pass_cost: float = 1.0,
                    per_target: bool = False, replace: bool = False) -> Entry:
    """Register an attack kind (see the module docstring for the facts). ``craft`` is the function or a
    ``"package.module:function"`` string imported on first use."""
    entry = ATTACKS.register(name, craft, replace=replace, params=dict(params or {}), gradient=gradient,
                            estimators=gradient, norms=tuple(norms), single_step=single_step, iterative=iterative,
                            random=random, library=library, min_classes=min_classes, in_suites=in_suites,
                            label=label or name, paper_column=paper_column,
                            class_name=class_name or "".join(part.capitalize() for part in name.split("-")),
                            passes=tuple(passes), pass_cost=float(pass_cost), per_target=per_target)
    assert isinstance(entry, Entry)  # a target was given, so register returned the entry, not a decorator
    return entry


def attack_class_names() -> dict[str, str]:
    """Class name -> attack kind, for every kind a suite may name (``transfer`` is PGD on another model)."""
    return {ATTACKS.facts(k)["class_name"]: k for k in ATTACKS.names(in_suites=True)}


def attack_kind(name: str) -> Entry:
    """The registry entry of attack kind ``name``; one-line UserError for an unknown name."""
    return ATTACKS.get(name)


def unit_work(name: str, params: dict[str, Any], num_classes: int = 10) -> float:
    """How much work one run of attack ``name`` with ``params`` is, relative to one gradient step per
    sample: the weight of its progress units, so that "remaining" does not count a 100-step APGD as one
    FGSM. On the strong suite (CPU, 50 mnist5k samples, SR SNNs) a weight cost 0.12-0.23 s across PGD,
    APGD-CE, APGD-T, FAB-T, Square and RayS; after PGD the weights foresaw 39 minutes where 33 remained,
    counting units alike 5."""
    kind = ATTACKS.get(name)
    work = kind.pass_cost
    for param in kind.passes:
        work *= float(params.get(param) or 1)
    if kind.per_target:
        work *= max(1, min(9, num_classes - 1))  # the targeted attacks' classes (autoattack_adapter)
    return work


def is_event_attack(name: str) -> bool:
    return "events" in ATTACKS.get(name).norms


# The built-in kinds. Written here, not in their modules, so that their facts load without PyTorch; each
# target names the function that implements it.
_GRADIENT = "spikeguard.attacks.gradient"
_LIBRARY = "spikeguard.attacks.autoattack_adapter"
register_attack("fgsm", f"{_GRADIENT}:craft_fgsm", class_name="FGSM", single_step=True, paper_column="FGSM")
register_attack("rfgsm", f"{_GRADIENT}:craft_rfgsm", class_name="RFGSM", params={"alpha": 0.5}, single_step=True)
register_attack("pgd", f"{_GRADIENT}:craft_pgd", class_name="PGD", iterative=True, label="pgd-{steps}",
                paper_column="PGD-{steps}", passes=("steps", "restarts"),
                params={"steps": 10, "alpha": None, "restarts": 1, "random_start": True, "loss": "ce"})
register_attack("apgd-ce", f"{_LIBRARY}:craft_apgd_ce", class_name="APGDCE",
                params={"steps": 100, "restarts": 1}, iterative=True, passes=("steps", "restarts"),
                norms=("linf", "l2"), library=True)
register_attack("apgd-dlr", f"{_LIBRARY}:craft_apgd_dlr", class_name="APGDDLR",
                params={"steps": 100, "restarts": 1}, iterative=True, passes=("steps", "restarts"),
                norms=("linf", "l2"), library=True)
register_attack("apgd-t", f"{_LIBRARY}:craft_apgd_t", class_name="APGDT",
                params={"steps": 100, "restarts": 1}, iterative=True, passes=("steps", "restarts"), per_target=True,
                norms=("linf", "l2"), library=True, min_classes=4)
register_attack("fab-t", f"{_LIBRARY}:craft_fab_t", class_name="FABT",
                params={"steps": 100, "restarts": 1}, iterative=True, passes=("steps", "restarts"), per_target=True,
                pass_cost=1.3,  # its steps also project onto the linearised boundary (measured: 1.3x a PGD step)
                norms=("linf", "l2"), library=True, min_classes=4)
register_attack("autoattack", f"{_LIBRARY}:craft_autoattack", class_name="AutoAttack", iterative=True,
                norms=("linf", "l2"), library=True, min_classes=4,
                pass_cost=100 + 9 * 100 + 9 * 130 + 0.5 * 5000)  # standard: APGD-CE, APGD-T, FAB-T, Square
register_attack("square", f"{_LIBRARY}:craft_square", gradient=False, norms=("linf", "l2"), library=True,
                params={"queries": 5000, "restarts": 1, "p_init": 0.8}, passes=("queries", "restarts"), pass_cost=0.5)
register_attack("random-uniform", "spikeguard.attacks.noise:craft_uniform", gradient=False, random=True,
                params={"draws": 10}, passes=("draws",), pass_cost=0.5)
register_attack("random-sign", "spikeguard.attacks.noise:craft_signs", gradient=False, random=True,
                params={"draws": 10}, passes=("draws",), pass_cost=0.5)
# PGD on a gradient estimated from outputs alone (spikeguard/attacks/estimated_gradient.py): sigma and alpha
# are fractions of eps; 2 x directions queries per step
register_attack("nes-pgd", "spikeguard.attacks.estimated_gradient:craft_nes_pgd", gradient=False, iterative=True,
                params={"steps": 20, "directions": 50, "sigma": 0.1}, label="nes-pgd-{steps}",
                class_name="NESPGD", passes=("steps", "directions"))  # 2 queries of half a step each
# decision-based: RayS (spikeguard/attacks/decision.py) reads only the top class, so flat outputs (hard labels,
# saturated or quantised scores) do not stop it; queries: per sample (the module docstring counts them)
register_attack("rays", "spikeguard.attacks.decision:craft_rays", gradient=False, class_name="RayS",
                params={"queries": 5000}, label="rays-{queries}", passes=("queries",), pass_cost=0.5)
# events-l0 only (spikeguard/attacks/events.py); budget: events per sample, None = the evaluation's
register_attack("sparse-events", "spikeguard.attacks.events:craft_sparse_events", norms=("events",),
                params={"steps": 20, "budget": None}, passes=("steps",))
register_attack("random-events", "spikeguard.attacks.events:craft_random_events", gradient=False, random=True,
                norms=("events",), params={"draws": 10, "budget": None}, passes=("draws",), pass_cost=0.5)
# PGD on an independently trained source model, scored on the target (the suite's ``transfer:`` block); its
# per-sample columns carry this label
TRANSFER = "transfer"
register_attack(TRANSFER, f"{_GRADIENT}:craft_pgd", gradient=False, in_suites=False, passes=("steps",))
