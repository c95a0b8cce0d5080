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

ROOT = Path(__file__).parents[1]
CI_MUTANTS = 320
CI_ANALYZED = 24
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
    assert {"keyword", "in-place", "truncate", "non-ASCII", "HEADER", "data", "bit"} <= classes


def test_seeded_mutants_end_cleanly(engine):
    tally = engine.fuzz(CI_MUTANTS, CI_SEED, analyze_count=CI_ANALYZED)
    inspected = [o for o in tally.outcomes if o.stage == "inspect"]
    analyzed = [o for o in tally.outcomes if o.stage == "analyze"]
    assert len(inspected) == CI_MUTANTS and len(analyzed) == CI_ANALYZED
    assert tally.failures() == [], describe(tally.failures())
    # Both ways of ending must really occur, or the mutants are too tame (or too broken).
    results = {o.result for o in inspected}
    assert {"ok-read", "ok-refused"} <= results
    assert any(o.result == "ok-FAILED" for o in analyzed)
    assert any(o.result in ("ok-MET", "ok-NOT_MET", "ok-REVIEW") for o in analyzed)


def test_a_traceback_a_hang_and_bad_json_are_each_caught(engine, tmp_path, monkeypatch):
    """The harness itself: each kind of failure it must report is reported."""
    from cd125gate import fcsinfo

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

    monkeypatch.setattr(fcsinfo, "run", lambda args: print('[{"timestep": NaN}]') or 0)
    assert engine.check_inspect(path, path.stat().st_size)[0] == "invalid-json"


def test_input_modification_is_caught(engine, tmp_path, monkeypatch):
    def scribble(path, size):
        Path(path).write_bytes(b"changed")
        return "ok-read", ""

    monkeypatch.setattr(engine, "check_inspect", scribble)
    outcomes = list(engine.run_mutant("test", "seed", b"FCS3.1", tmp_path, 0))
    assert [o.result for o in outcomes if o.stage == "input"] == ["modified"]


def test_every_mutation_operator_produces_mutants(engine):
    rng = random.Random(5)
    seeds = [engine.load_seed(path) for path in engine.seed_files()]
    for operator, _ in engine.MUTATIONS:
        made = [operator(rng, seed) for seed in seeds]
        assert any(m is not None for m in made), operator.__name__
