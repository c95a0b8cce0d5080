"""Seeded fuzzing in CI: mutants of the corpus and bundled tubes end cleanly, every one (issue 13).

The engine is scripts/fuzz.py (run it with --fuzz 5000 locally); here a fixed
seed gives the same few hundred mutants on every run. Each runs in-process
through `inspect --json` and the analysis read stage (and a share through the
whole `analyze`), under a per-mutant time limit, and must end with a result
or a one-line refusal: no traceback, no timeout, strict JSON, inputs unchanged.
"""

import importlib.util
import random
from pathlib import Path

import pytest

from cd125gate import results

ROOT = Path(__file__).parents[1]
CI_MUTANTS = 320
CI_ANALYZED = 20
CI_SEED = 20261201


def load_engine():
    spec = importlib.util.spec_from_file_location("cd125gate_fuzz", ROOT / "scripts" / "fuzz.py")
    engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(engine)
    return engine


@pytest.fixture(scope="module")
def engine():
    return load_engine()


def describe(failures):
    return "\n".join(f"{o.mutation} of {o.seed}: {o.stage} {o.result}: {o.detail[:300]}" for o in failures)


def test_mutants_are_reproducible_and_varied(engine):
    first = [(label, seed, content) for label, seed, content in engine.mutants(60, CI_SEED)]
    again = [(label, seed, content) for label, seed, content in engine.mutants(60, CI_SEED)]
    assert first == again
    classes = {engine.mutation_class(label) for label, _, _ in engine.mutants(CI_MUTANTS, CI_SEED)}
    assert {"keyword", "in-place", "truncate", "non-ASCII", "HEADER", "data", "bit", "long-number"} <= classes


@pytest.mark.slow
def test_seeded_mutants_end_cleanly(engine):
    tally = engine.fuzz(CI_MUTANTS, CI_SEED, analyze_count=CI_ANALYZED)
    inspected = [o for o in tally.outcomes if o.stage == "inspect"]
    analyzed = [o for o in tally.outcomes if o.stage == "analyze"]
    assert len(inspected) == CI_MUTANTS and len(analyzed) == CI_ANALYZED
    assert tally.failures() == [], describe(tally.failures())
    # Both ways of ending must really occur, or the mutants are too tame (or too broken).
    results = {o.result for o in inspected}
    assert {"ok-read", "ok-refused"} <= results
    assert any(o.result in ("ok-FAILED", "ok-refused") for o in analyzed)  # exit 4, or 2 for unreadable input
    assert any(o.result in ("ok-MET", "ok-NOT_MET", "ok-REVIEW") for o in analyzed)


def test_a_traceback_a_hang_and_bad_json_are_each_caught(engine, tmp_path, monkeypatch):
    """The harness itself: each kind of failure it must report is reported."""
    from cd125gate.cli import inspect as cli_inspect
    from cd125gate.io import fcsinfo

    path = tmp_path / "good.fcs"
    path.write_bytes((ROOT / "test_data" / "low_fmo_stained.fcs").read_bytes())

    def crash(fcs):
        raise ValueError("boom")

    monkeypatch.setattr(fcsinfo, "summary", crash)
    assert engine.check_inspect(path, path.stat().st_size)[0] == "traceback"

    def hang(fcs):
        while True:
            pass

    monkeypatch.setattr(fcsinfo, "summary", hang)
    monkeypatch.setattr(engine, "bound", lambda size, base: 0.5)
    assert engine.check_inspect(path, path.stat().st_size)[0] == "timeout"

    monkeypatch.setattr(cli_inspect, "run", lambda args: print('[{"timestep": NaN}]') or 0)
    assert engine.check_inspect(path, path.stat().st_size)[0] == "invalid-json"


def test_input_modification_is_caught(engine, tmp_path, monkeypatch):
    def scribble(path, size):
        Path(path).write_bytes(b"changed")
        return "ok-read", ""

    monkeypatch.setattr(engine, "check_inspect", scribble)
    outcomes = list(engine.run_mutant("test", "seed", b"FCS3.1", tmp_path, 0))
    assert [o.result for o in outcomes if o.stage == "input"] == ["modified"]


# Keywords whose absurdly long number the reader must refuse, naming the keyword (the others are
# floats, refused or warned as not finite, or keywords only warned about or not parsed at all).
REFUSED_LONG = {b"$PAR", b"$TOT", b"$BEGINDATA", b"$ENDDATA", b"$P1B"}
LONG_KEYS = sorted(REFUSED_LONG | {b"$NEXTDATA", b"$P1R", b"$P1G", b"$TIMESTEP", b"$SPILLOVER", b"$DATE",
                                   b"$BEGINSTEXT"})


@pytest.mark.slow
def test_absurdly_long_numbers_end_in_one_line_or_a_read(engine, tmp_path):
    """The issue's last traceback: int() of a 5,000-digit $PAR or $TOT. Every numeric keyword of a
    bundled tube, at lengths around Python's 4,300-digit limit, and its own value behind 5,000 zeros."""
    rng = random.Random(CI_SEED)
    seed = engine.load_seed(ROOT / "test_data" / "low_fmo_stained.fcs")
    values = {"21": b"1" + b"0" * 20, "4300": b"9" * 4300, "4301": b"9" * 4301, "5000": b"9" * 5000,
              "-5000": b"-" + b"9" * 5000, "zero-padded": None}
    outcomes = []
    for key in LONG_KEYS:
        for kind, value in values.items():
            label, content = engine.mutate_long_number(rng, seed, key, value, padding=5000 if value is None else None)
            for outcome in engine.run_mutant(label, seed.path.name, content, tmp_path, len(outcomes)):
                outcomes.append((key, kind, outcome))
    failures = [o for _, _, o in outcomes if not o.result.startswith("ok")]
    assert failures == [], describe(failures)
    for key, kind, outcome in outcomes:
        if kind == "zero-padded":
            assert outcome.result == "ok-read", (key, outcome)  # leading zeros are no reason to refuse
        elif key in REFUSED_LONG and outcome.stage == "inspect":
            assert outcome.result == "ok-refused", (key, kind, outcome)
            assert outcome.detail.startswith(f"{key.decode()} is not a plausible "), outcome.detail
            assert outcome.detail.endswith(f" ({int(kind.lstrip('-')):,} digits)"), outcome.detail
    # Random draws of the operator, over every seed: the same contract.
    seeds = [engine.load_seed(path) for path in engine.seed_files()]
    drawn = [engine.mutate_long_number(rng, rng.choice(seeds)) for _ in range(40)]
    tally = engine.Tally()
    for index, (label, content) in enumerate(m for m in drawn if m is not None):
        for outcome in engine.run_mutant(label, "drawn", content, tmp_path, 1000 + index):
            tally.add(outcome)
    assert tally.failures() == [], describe(tally.failures())
    assert {"ok-read", "ok-refused"} <= {o.result for o in tally.outcomes}


def test_every_mutation_operator_produces_mutants(engine):
    rng = random.Random(5)
    seeds = [engine.load_seed(path) for path in engine.seed_files()]
    for operator, _ in engine.MUTATIONS:
        made = [operator(rng, seed) for seed in seeds]
        assert any(m is not None for m in made), operator.__name__


# --- The degenerate tubes, end to end through `cd125gate analyze` (reproducers). ---

# Degenerate data that the plausibility checks now send to FAILED before any gating.
FAILED_EARLY = {
    "identical_events": "FSC-A: constant: 100.0% of 5,000 events have the value",
    "all_zero": "FSC-A: constant: 100.0% of 5,000 events have the value 0",
    "constant_ssc": "SSC-A: constant: 100.0% of 5,000 events have the value 5000",
    "cd125_1e30": "CD125 (PE-A): 715 of 5,000 events have values beyond 1e+06 x the range",
    "cd125_range_1e308": "CD125 (PE-A): $P6R=1e+308 but the largest value is",
    "float_declared_integer": "FSC-A: 100% of events have bits above $P1R=262144",
    "time_nan": "Time: 5,000 of 5,000 events hold NaN or infinite values",
}
# Degenerate time data that reads plausibly; the gating's own guards must end it (these raised
# IndexError from np.percentile of an empty gate after time QC).
GATED_LATE = ("time_jump", "time_constant")


@pytest.fixture(scope="module")
def degenerate(engine, tmp_path_factory):
    return engine.degenerate_tubes(tmp_path_factory.mktemp("degenerate"))


@pytest.mark.parametrize("name", sorted(FAILED_EARLY))
def test_degenerate_tube_fails_with_its_reason(engine, degenerate, tmp_path, name):
    path = degenerate[name]
    result, detail = engine.check_analyze(path, path.stat().st_size, tmp_path / "out")
    # Implausible data is found while reading: exit 2 with one line (a FAILED result.json beside).
    assert result == "ok-refused", detail
    assert "implausible data: " + FAILED_EARLY[name] in detail
    assert results.load(tmp_path / "out/result.json").criterion == "FAILED"


@pytest.mark.slow
def test_zero_timestep_is_ignored_with_a_warning(engine, degenerate, tmp_path):
    path = degenerate["timestep_zero"]
    result, detail = engine.check_analyze(path, path.stat().st_size, tmp_path / "out")
    assert result in ("ok-MET", "ok-NOT_MET", "ok-REVIEW"), detail
    import json

    warnings = json.loads((tmp_path / "out" / "result.json").read_text())["warnings"]
    assert any("$TIMESTEP is not a positive number" in w for w in warnings)


def test_a_path_with_mathtext_reaches_the_failure_figure_as_plain_text(engine, degenerate, tmp_path):
    path = degenerate["mathtext_in_path"]
    result, detail = engine.check_analyze(path, path.stat().st_size, tmp_path / "out")
    assert result == "ok-refused", detail   # a truncated tube: one line, exit 2
    assert (tmp_path / "out/qc.png").stat().st_size > 0
    assert results.load(tmp_path / "out/result.json").reasons[0].startswith(str(path))


@pytest.mark.parametrize("name", GATED_LATE)
def test_degenerate_time_data_ends_in_the_gatings_own_guards(engine, degenerate, tmp_path, name):
    path = degenerate[name]
    result, detail = engine.check_analyze(path, path.stat().st_size, tmp_path / "out")
    assert result in ("ok-FAILED", "ok-REVIEW"), detail
