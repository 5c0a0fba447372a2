"""The results vocabulary: what an evaluation writes to results.json and to the per-sample CSV beside it, as
typed records, and the one reader that upgrades every results.json spikeguard has ever written.

Modules: records.py (results.json's records), samples.py (the per-sample rows and CSV), upgrade.py
(the reader and the older formats).

Public API (no PyTorch needed):

* ``SCHEMA_VERSION``: written into every results.json as ``"schema_version"``.
* ``FlagName``: the name of every sanity flag, defined once; ``UNTRUSTING``: the flags after which the
  gradient cannot be trusted (they start the escalation and make the headline "not a bound").
* ``Flag`` (name, detail), ``NotApplicable`` (name, why), ``Headline`` (accuracy, is_bound, label, why, tried),
  ``AttackResult`` (one entry of "attacks"), ``EscalationRecord``, ``GradientCheck``, ``UnboundedCheck``.
* ``EvalRecord``: results.json's content; ``to_json()`` gives the dict written, ``EvalRecord.from_json(d)``
  reads a current one. ``record.all_attacks()`` adds the escalation's cumulative entries.
* ``SampleOutcome`` (one per-sample row: clean correct, robust, broken_by, zero_gradient as a list, and per
  attack an ``AttackOutcome``: its worst-case score, the member that reached it, each member's score and a
  random attack's mean over draws). ``to_row()`` / ``from_row()``: the CSV's flat "label|member" columns,
  which appear nowhere else.
* ``read_results(path_or_dict) -> EvalRecord``: THE reader; upgrades every older format listed below.
  ``results_version(dict)``: the format of a JSON object (None: not a results file).
* ``read_samples(path)`` / ``write_samples(path, samples)``: the per-sample CSV.

Format versions (docs/results-schema.md has the commits and what each reader does with them):

0. before the attack suites (07ffd86): robust_accuracy {attack: accuracy}, worst_case_accuracy, broken_by
   counts, attack settings; no per-sample CSV. Upgraded: attacks from robust_accuracy (estimators from
   "attack"), ensemble_accuracy = worst_case_accuracy; no flags were checked, so ``flags`` is None.
1. attack suites (9e51ccf): attacks, ensemble_accuracy, flags, gradient_check, unbounded_accuracy, per_sample,
   suite_spec and provenance. (da37e79 later changed what an attack's "estimators" lists, from the suite's
   members to those that ran, and which attack a row's broken_by names; the keys stayed.)
2. distributed evaluation (a469dfb): "ranks". Upgraded files before it ran in one process: ranks = 1.
3. threat models (ff58061): threat_model, unbounded_check, flags_not_applicable; later without a new key
   set budget_sweep (69374eb, events-l0), estimator_bank and external_model (8252550, library models).
   Upgraded files before it are image l-inf: threat_model None, read as linf.
4. trust (c9e8ab6): headline, escalation, ensemble_accuracy_before_escalation; 0d843ac added the escalation's
   estimated-gradient attack (three attacks, not two); 7eb77e0 imported_checkpoint. Files before it have no
   headline (None: nothing says whether their number is a bound).
5. this schema (issue 20): "schema_version"; nothing else changed, so a version-4 file reads as it is.
6. checkpoint epoch (issue 26): "checkpoint_epoch", the epochs trained into the evaluated checkpoint (a run
   still training has more later); omitted for a model without a checkpoint. Files before it: None (unknown).
7. trust III (issue 21): "probes" (forward/backward agreement, flat outputs, batch dependence, dead surrogates)
   and the flags backward_disagrees, flat_outputs, dead_surrogate, batch_dependent; omitted when no probe
   ran. Files before it: None (no probe ran).

Every field a later change adds goes through this module: a new field here, SCHEMA_VERSION + 1, a line
above and a fixture in tests/fixtures/results/.
"""

from __future__ import annotations

from spikeguard.schema.records import (
    ESCALATION,
    SCHEMA_VERSION,
    UNTRUSTING,
    AttackResult,
    EscalationAttack,
    EscalationRecord,
    EvalRecord,
    Flag,
    FlagName,
    GradientCheck,
    Headline,
    NotApplicable,
    Probes,
    UnboundedCheck,
)
from spikeguard.schema.samples import CSV_FIRST, AttackOutcome, SampleOutcome, read_samples, write_samples
from spikeguard.schema.upgrade import read_results, results_version

__all__ = ["AttackOutcome", "AttackResult", "CSV_FIRST", "ESCALATION", "EscalationAttack", "EscalationRecord",
           "EvalRecord", "Flag", "FlagName", "GradientCheck", "Headline", "NotApplicable", "Probes", "SCHEMA_VERSION",
           "SampleOutcome", "UNTRUSTING", "UnboundedCheck", "read_results", "read_samples", "results_version",
           "write_samples"]
