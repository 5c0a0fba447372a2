"""The results schema: one results.json of every format spikeguard has written (tests/fixtures/results/, each
written by the writer code of its commit: docs/results-schema.md) read through the one reader, and the
current layout written and read back unchanged."""

import json
from pathlib import Path

import pytest

from spikeguard.errors import UserError
from spikeguard.schema import (
    SCHEMA_VERSION,
    UNTRUSTING,
    EvalRecord,
    FlagName,
    SampleOutcome,
    read_results,
    read_samples,
    results_version,
    write_samples,
)

FIXTURES = Path(__file__).parent / "fixtures" / "results"
VERSIONS = {0: "v0-pre-suite", 1: "v1-suite", 2: "v2-ranks", 3: "v3-threat-model", 4: "v4-trust",
            5: "v5-schema-version", 6: "v6-checkpoint-epoch"}
CURRENT = FIXTURES / "v7-probes.json"  # written by this version's evaluate


def fixture(version: int) -> Path:
    return FIXTURES / f"{VERSIONS[version]}.json"


def test_every_past_version_has_a_fixture_and_is_recognised():
    assert sorted(VERSIONS) == list(range(SCHEMA_VERSION))
    for version in VERSIONS:
        assert results_version(json.loads(fixture(version).read_text())) == version
        assert read_results(fixture(version)).upgraded_from == version


def test_version_0_before_the_suites():
    record = read_results(fixture(0))
    assert record.model == "digits_cnn" and record.n == 6 and record.eps == 0.1
    assert [(a.name, a.accuracy) for a in record.attacks] == [("fgsm", pytest.approx(2 / 3)),
                                                              ("pgd", pytest.approx(2 / 3))]
    assert record.attacks[0].estimators == ["triangle:1", "sigmoid:4", "atan:2", "bptr"]
    assert record.attacks[1].params == {"steps": 2, "alpha": 0.125}
    assert record.ensemble_accuracy == pytest.approx(2 / 3) and record.clean_accuracy == 1.0
    # nothing was checked then: no flags (not "none fired"), no headline, no per-sample file
    assert record.flags is None and record.headline is None and record.per_sample is None
    assert record.headline_accuracy() == record.ensemble_accuracy
    assert record.extra["broken_by"] == {"fgsm": {"bptr": 1, "triangle:1": 1}, "pgd": {"triangle:1": 2}}
    assert record.threat_name == "linf" and record.ranks == 1


@pytest.mark.parametrize("version", [1, 2])
def test_versions_1_and_2_suites_and_flags(version):
    record = read_results(fixture(version))
    assert record.suite == "tiny" and record.n == 6 and record.ranks == 1
    assert [f.name for f in record.flags] == [FlagName.ZERO_GRADIENT, FlagName.BLACK_BOX_BEATS_WHITE_BOX]
    assert all(f.untrusting and f.detail for f in record.flags)
    assert record.threat_model is None and record.threat_name == "linf" and record.headline is None
    assert record.flags_not_applicable is None and record.escalation is None
    assert record.gradient_check.all_zero_samples == 6
    members = ["triangle:1", "atan:2"] if version == 1 else ["native"]
    assert record.attacks[0].estimators == members
    samples = read_samples(FIXTURES / record.per_sample)
    assert [s.index for s in samples] == list(range(6))
    assert samples[0].zero_gradient == members  # a space-joined cell, read as a list
    assert samples[5].broken_by == "square" and samples[5].robust == 0.0
    assert samples[5].attacks["square"].broken_by == "square"
    assert sum(s.robust for s in samples) / 6 == pytest.approx(record.ensemble_accuracy)


def test_version_3_threat_model_and_sweep():
    record = read_results(fixture(3))
    assert record.threat_name == "linf" and record.threat_model["eps"] == 0.1
    assert record.unbounded_check.steps == 3 and record.flags == [] and record.headline is None
    assert record.flags_not_applicable == []  # run with --eps-sweep: every check could fire
    assert [p["eps"] for p in record.eps_sweep][-1] == 1.0
    samples = read_samples(FIXTURES / record.per_sample)
    assert samples[2].broken_by == "clean" and samples[3].broken_by == "fgsm/native"
    assert samples[3].attacks["random-sign"].mean == 0.0 and samples[3].attacks["random-sign"].members == \
        {"draws": 0.0}


def test_version_4_escalation_and_headline():
    record = read_results(fixture(4))
    assert not record.headline.is_bound and record.headline.label == "not a bound"
    assert record.headline.accuracy == record.ensemble_accuracy == 0.5
    assert record.ensemble_accuracy_before_escalation == pytest.approx(5 / 6)
    assert record.escalation.why == [FlagName.ZERO_GRADIENT, FlagName.BLACK_BOX_BEATS_WHITE_BOX]
    assert [a.name for a in record.all_attacks()][-3:] == ["escalation-transfer", "escalation-estimated-gradient",
                                                           "escalation-square"]
    assert all(a.cumulative for a in record.escalation.results) and not record.attacks[0].cumulative
    samples = read_samples(FIXTURES / record.per_sample)
    assert samples[3].broken_by == "escalation-transfer/pgd"
    assert samples[2].attacks["escalation-estimated-gradient"].broken_by == "nes-pgd"
    assert set(UNTRUSTING) >= set(record.escalation.why)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_an_upgraded_file_writes_the_current_layout_and_reads_back_the_same(version):
    record = read_results(fixture(version))
    written = record.to_json()
    assert written["schema_version"] == SCHEMA_VERSION
    assert read_results(written) == record


def test_the_current_layout_round_trips_key_for_key():
    """A version-4 file is the current layout without schema_version: written back, only that key is new."""
    data = json.loads(fixture(4).read_text())
    assert read_results(data).to_json() == {"schema_version": SCHEMA_VERSION, **data}
    assert list(read_results(data).to_json())[1:] == list(data)


def test_version_6_records_the_checkpoint_epoch():
    """A trained run's checkpoint records its epoch; every older file reads it as unknown (None)."""
    record = read_results(fixture(6))
    assert record.checkpoint_epoch == 1 and record.checkpoint == "runs/tiny/best.pt" and record.upgraded_from == 6
    older = read_results(fixture(5))
    assert older.checkpoint_epoch is None and older.upgraded_from == 5 and "checkpoint_epoch" not in older.to_json()
    assert [k for k in record.to_json() if k != "checkpoint_epoch"] == list(older.to_json())  # the one new key


def test_version_7_records_the_probes():
    """The probes before any attack (agreement, flat outputs, batch dependence, dead surrogates) are kept under
    "probes"; every older file reads them as not run (None) and writes no such key."""
    record = read_results(CURRENT)
    assert record.upgraded_from is None and record.to_json() == json.loads(CURRENT.read_text())
    probes = record.probes
    assert probes.agreement["probed"] > 0 and probes.flat_outputs["flat_fraction"] == 0.0
    assert probes.batch_dependence["batch_dependent"] is False
    assert set(probes.dead_surrogates["members"]) == {"triangle:1"}
    older = read_results(fixture(6))
    assert older.probes is None and "probes" not in older.to_json()
    assert [k for k in record.to_json() if k != "probes"] == list(older.to_json())  # the one new key


def test_samples_round_trip_through_the_csv(tmp_path):
    samples = read_samples(FIXTURES / "v4-trust.csv")
    write_samples(tmp_path / "again.csv", samples)
    assert (tmp_path / "again.csv").read_text() == (FIXTURES / "v4-trust.csv").read_text()
    row = samples[0].to_row(lists=True)
    assert SampleOutcome.from_row(row) == samples[0] and isinstance(row["zero_gradient"], list)


def test_what_is_not_a_results_file_is_one_line(tmp_path):
    for data in (5, {"format": "spikeguard-analysis"}, {"schema_version": "x"}):
        with pytest.raises(UserError, match="not a spikeguard results file"):
            read_results(data if isinstance(data, dict) else _write(tmp_path, data))
    with pytest.raises(UserError, match="newer than this spikeguard"):
        read_results({**json.loads(fixture(4).read_text()), "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(UserError, match="cannot be read"):
        read_results(tmp_path / "missing.json")
    assert isinstance(read_results(json.loads(fixture(4).read_text())), EvalRecord)


def _write(tmp_path, data) -> Path:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    return path
