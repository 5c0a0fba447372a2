"""Sanity flags: signs that an evaluation is weaker than it looks (masked or obfuscated gradients, a
broken attack, an unhandled random model). Each is a schema.Flag named by schema.FlagName; an empty list means
none fired."""

from __future__ import annotations

from spikeguard.attacks.ensemble import BROKEN
from spikeguard.attacks.registry import TRANSFER, attack_kind
from spikeguard.evaluation.suites import Suite
from spikeguard.schema import Flag, FlagName, NotApplicable, SampleOutcome


def _broken(rows: list[SampleOutcome], label: str) -> set[int]:
    return {r.index for r in rows if label in r.attacks and r.clean_correct >= BROKEN and r.score(label) < BROKEN}


def zero_gradient_flag(rows: list[SampleOutcome], gradient_estimators: list[str],
                       saturation: dict | None = None) -> list[Flag]:
    """Clean-correct samples whose input gradient is exactly zero under every estimator. ``saturation``
    (saturation.softmax_saturation on the probe samples) tells a saturated softmax apart: there the
    cross-entropy's gradient vanishes while the margin's does not."""
    clean = [r for r in rows if r.clean_correct >= BROKEN]
    masked = [r.index for r in clean if gradient_estimators and len(r.zero_gradient) == len(gradient_estimators)]
    if not masked:
        return []
    found = (f"{len(masked)} of {len(clean)} clean-correct samples have an exactly zero input gradient under every "
             f"estimator (e.g. sample {masked[0]})")
    if saturation and saturation.get("one_hot"):
        return [Flag(FlagName.ZERO_GRADIENT, f"{found}: the logits are saturated (the softmax is exactly one-hot in "
                     f"float32 on {saturation['one_hot']} of {saturation['correct']} clean-correct probe "
                     "samples), so the cross-entropy gradient vanishes; margin-loss attacks are not affected (PGD "
                     "with loss: margin, APGD-DLR, and APGD-T and FAB-T in the strong suite)")]
    return [Flag(FlagName.ZERO_GRADIENT, f"{found}: gradient attacks start blind there; trust the black-box "
                 "attacks")]


def per_sample_flags(rows: list[SampleOutcome], suite: Suite, labels: list[str],
                     gradient_estimators: list[str], saturation: dict | None = None) -> list[Flag]:
    flags = zero_gradient_flag(rows, gradient_estimators, saturation)
    kinds = {s.label: attack_kind(s.attack) for s in suite.attacks}
    kinds.setdefault(TRANSFER, attack_kind(TRANSFER))  # the transfer attack's rows carry its label
    white = [lab for lab in labels if kinds[lab].gradient]
    black = [lab for lab in labels if not kinds[lab].gradient]
    if white:
        broken_white = set().union(*(_broken(rows, lab) for lab in white))
        for lab in black:
            extra = _broken(rows, lab) - broken_white
            if extra:
                flags.append(Flag(FlagName.BLACK_BOX_BEATS_WHITE_BOX,
                                  f"{lab} broke {len(extra)} samples that no white-box attack broke "
                                  f"(e.g. sample {min(extra)}): the gradients mislead the attacks"))
    estimators = {s.label: set(s.estimators) for s in suite.attacks}
    for single in (lab for lab in labels if kinds[lab].single_step):
        # compared only where the iterative attack had every estimator the single step had
        for iterative in (lab for lab in labels if kinds[lab].iterative
                          and estimators[single] <= estimators[lab]):
            missed = _broken(rows, single) - _broken(rows, iterative)
            if missed:
                flags.append(Flag(FlagName.ITERATIVE_WEAKER_THAN_SINGLE_STEP,
                                  f"{iterative} missed {len(missed)} samples that {single} broke "
                                  f"(e.g. sample {min(missed)})"))
    return flags


def grad_mode_flag(members: list[str]) -> list[Flag]:
    if members:
        return [Flag(FlagName.GRAD_MODE_DEPENDENCE,
                     f"the model's outputs change when the input requires a gradient (under {', '.join(members)}): "
                     "the gradient belongs to another function than the one that is scored, so gradient attacks "
                     "are misled; trust the transfer and black-box attacks")]
    return []


def batch_dependent_flag(probe: dict | None, batch_size: int) -> list[Flag]:
    """The outputs depend on the batch and the user said that is intended (batch_dependence.check refuses
    it otherwise): every per-sample outcome holds for the batch it was scored in only."""
    if probe and probe.get("batch_dependent"):
        return [Flag(FlagName.BATCH_DEPENDENT,
                     f"the model's outputs depend on the other samples in its batch ({probe['changed_samples']} of "
                     f"{probe['samples']} probe samples changed with their batch companions; intended, "
                     "--batch-dependent): every per-sample outcome holds for the batch it was scored in (batches "
                     f"of {batch_size}, and in each attack the samples still standing), so another batch size or "
                     "sample order gives other numbers")]
    return []


def stochastic_flag(stochastic: bool, draws: int) -> list[Flag]:
    if stochastic and draws <= 1:
        return [Flag(FlagName.STOCHASTIC_WITHOUT_EOT,
                     "two forward passes on the same input differ, but gradients and accuracy use one draw: robust "
                     "accuracy is overstated; rerun without --eot-draws 1")]
    return []


def unbounded_flag(accuracy: float | None, n: int, attack: str = "PGD with eps = 1 (any image allowed)") -> list[Flag]:
    if accuracy is not None and accuracy > 0:
        return [Flag(FlagName.UNBOUNDED_EPS_NOT_ZERO, f"{attack} leaves {accuracy:.1%} of {n} samples correct: the "
                     "attack is not working, so no number from it is a bound")]
    return []


def not_applicable(suite: Suite, threat, eps_sweep: bool) -> list[NotApplicable]:
    """The flags that could not fire in this evaluation, and why (so no check is skipped silently)."""
    kinds = [s.kind for s in suite.attacks]
    white = any(k.gradient for k in kinds)
    out = []
    if not white:
        out.append(NotApplicable(FlagName.ZERO_GRADIENT, "the suite has no white-box attack"))
    if not white or all(k.gradient for k in kinds):
        out.append(NotApplicable(FlagName.BLACK_BOX_BEATS_WHITE_BOX,
                                 "the suite needs both a white-box and a black-box or random attack"))
    if not any(k.single_step for k in kinds) or not any(k.iterative for k in kinds):
        events = threat is not None and threat.events
        out.append(NotApplicable(FlagName.ITERATIVE_WEAKER_THAN_SINGLE_STEP,
                                 "no single-step event attack exists (events-l0)" if events else
                                 "the suite needs both a single-step (fgsm, rfgsm) and an iterative l-inf attack"))
    if suite.unbounded_n == 0:
        out.append(NotApplicable(FlagName.UNBOUNDED_EPS_NOT_ZERO, "the suite's checks.unbounded_n is 0"))
    events = threat is not None and threat.events
    if not eps_sweep:
        sweep = FlagName.ACCURACY_RISES_WITH_BUDGET if events else FlagName.ACCURACY_RISES_WITH_EPS
        out += [NotApplicable(sweep, "run without --eps-sweep"),
                NotApplicable(FlagName.ACCURACY_NOT_TOWARD_CHANCE, "run without --eps-sweep")]
    elif events:
        out.append(NotApplicable(FlagName.ACCURACY_NOT_TOWARD_CHANCE,
                                 "under events-l0 the unbounded check (no budget) is the toward-chance check"))
    return out


def sweep_flags(sweep: list[dict], num_classes: int, n: int, radius: str = "eps") -> list[Flag]:
    """Accuracy must fall as the radius (eps, or the event budget) grows; an eps sweep ends at eps = 1,
    where it must be near chance (a budget sweep's no-budget end is the unbounded check)."""
    flags = []
    tolerance = 2 / max(n, 1)
    for before, after in zip(sweep, sweep[1:]):
        if after["accuracy"] > before["accuracy"] + tolerance:
            name = FlagName.ACCURACY_RISES_WITH_EPS if radius == "eps" else FlagName.ACCURACY_RISES_WITH_BUDGET
            flags.append(Flag(name, f"accuracy {before['accuracy']:.1%} at {radius} {before[radius]:.4g} but "
                                    f"{after['accuracy']:.1%} at {radius} {after[radius]:.4g}"))
    if radius == "eps" and sweep and sweep[-1]["accuracy"] > 1 / num_classes + tolerance:
        flags.append(Flag(FlagName.ACCURACY_NOT_TOWARD_CHANCE,
                          f"at eps {sweep[-1]['eps']:.4g} accuracy is {sweep[-1]['accuracy']:.1%}, "
                          f"above chance ({1 / num_classes:.1%})"))
    return flags
