"""Re-gating with edited Gating-ML: ISAC compliance counts, and a moved CD125 cut-off on a bundled sample."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cd125gate.analysis import criterion
from cd125gate.analysis import pipeline as analyze
from cd125gate.analysis.numeric import stats
from cd125gate.errors import InputError
from cd125gate.io import gatesfile
from cd125gate.io.fileio import sha256_file
from cd125gate.results import outputs
from cd125gate.review import regate
from cd125gate.settings import load_settings

ROOT = Path(__file__).parents[1]
TEST_DATA = ROOT / "test_data"
# Gates of the compliance set whose expected result is stored under another name.
TRUTH_ALIAS = {"ParRectangle1": "ParQuadRect"}
# Documents of the set that are not valid Gating-ML 2.0 on purpose (attribute spellings).
NOT_COMPLIANT = {"gml_range_gate_attr_testing.xml"}


@pytest.fixture(scope="module")
def gate_ref():
    folder = ROOT / ".." / "shared" / "corpus" / "flowkit" / "gate_ref"
    if not folder.is_dir():
        pytest.skip("../shared/corpus/flowkit/gate_ref is not present")
    truth = {p.stem.removeprefix("Results_"): np.loadtxt(p, dtype=int) for p in (folder / "truth").glob("*.txt")}
    return folder, truth, gatesfile.load_sample(folder / "data1.fcs")


def test_isac_compliance_gates_give_the_expected_counts(gate_ref):
    folder, truth, sample = gate_ref
    checked = set()
    documents = sorted((folder / "gml").glob("*.xml"))
    assert len(documents) > 40
    for path in documents:
        if path.name in NOT_COMPLIANT:
            continue
        table = regate.count_gates(gatesfile.load_gates(path), sample, path)
        by_name = {g["name"]: g for g in table}
        for name, gate in by_name.items():
            expected = truth.get(TRUTH_ALIAS.get(name, name))
            if expected is None:
                continue
            assert gate["count"] == int(expected.sum()), (path.name, name)
            checked.add(TRUTH_ALIAS.get(name, name))
        for gate in table:  # each gate's parent count is its parent's count (or every event)
            parent = by_name.get(gate["parent"])
            assert gate["parent_count"] == (parent["count"] if parent else sample.event_count)
    # Every expected result of the set was matched by some document.
    assert checked == set(truth)


def test_a_non_compliant_document_is_one_line(gate_ref):
    folder, _, _ = gate_ref
    path = folder / "gml" / "gml_range_gate_attr_testing.xml"
    with pytest.raises(InputError) as err:
        gatesfile.load_gates(path)
    assert str(err.value).startswith(f"{path}: not a usable Gating-ML 2.0 document")
    assert "\n" not in str(err.value)


# --- a bundled sample, its exported gates edited by hand -------------------------------------------

@pytest.fixture(scope="module")
def near50(tmp_path_factory):
    """near50_fmo analysed, written, and kept in memory (the events and masks behind its counts)."""
    out = tmp_path_factory.mktemp("near50")
    analysis = analyze.analyze_sample(TEST_DATA / "near50_fmo_stained.fcs", TEST_DATA / "near50_fmo_control.fcs",
                                      sample_id="near50_fmo")
    outputs.write_outputs(analysis, out)
    return analysis, out


def move_cd125_cutoff(gates_xml, value, edited):
    """The hand edit a reviewer makes: the `min` of the cd125_pos gate set to ``value``."""
    text = gates_xml.read_text()
    pattern = r'(<gating:RectangleGate gating:id="cd125_pos"[^>]*>\s*<gating:dimension[^>]*gating:min=")[^"]+(")'
    text, n = re.subn(pattern, rf"\g<1>{value!r}\g<2>", text)
    assert n == 1
    edited.write_text(text)
    return edited


def test_unedited_gates_reproduce_the_automatic_result(near50, tmp_path):
    analysis, out = near50
    reviewed = regate.regate_result(out / "result.json", out / "gates.xml", tmp_path / "r.json")
    result = analysis.result
    assert (reviewed.blast_events, reviewed.cd125_pos_events) == \
        (result.blast_events, result.cd125_pos_events)
    assert {g["name"]: g["count"] for g in reviewed.gates} == {g["name"]: g["count"] for g in result.gates}
    assert "edited" not in reviewed.threshold


@pytest.mark.parametrize("shift", [+0.25, -0.25])
def test_a_moved_cd125_cutoff_changes_the_fraction_exactly_as_implied(near50, tmp_path, shift):
    analysis, out = near50
    stained = analysis.stained
    old = analysis.threshold.value
    new = old + shift
    edited = move_cd125_cutoff(out / "gates.xml", new, tmp_path / "edited.xml")
    reviewed = regate.regate_result(out / "result.json", edited, tmp_path / "reviewed_result.json")

    # What the edit implies, from the automatic analysis' own events: blasts at or above the new cut-off.
    blasts = stained.step("blasts").mask
    cd125 = stained.column(stained.markers["CD125"])
    positive = int((blasts & (cd125 >= new)).sum())
    assert positive != analysis.result.cd125_pos_events
    assert reviewed.blast_events == int(blasts.sum())
    assert reviewed.cd125_pos_events == positive
    assert reviewed.cd125_pos_fraction == positive / int(blasts.sum())
    low, high = stats.wilson_interval(positive, int(blasts.sum()))
    assert (reviewed.ci_low, reviewed.ci_high) == (low, high)
    evidence = criterion.Evidence(int(blasts.sum()), positive, "control_percentile", control_used=True)
    expected = criterion.decide(evidence, load_settings()).criterion
    assert reviewed.criterion == expected
    # The control's share above the cut-off moves the same way.
    control = analysis.control
    control_pos = int((control.step("blasts").mask & (control.column(control.markers["CD125"]) >= new)).sum())
    assert {g["name"]: g["count"] for g in reviewed.control_gates}["cd125_pos"] == control_pos
    # Threshold and provenance of the edit; the automatic result is untouched.
    assert reviewed.threshold["edited"] is True and reviewed.threshold["value"] == new
    assert reviewed.review["source_result_sha256"] == sha256_file(out / "result.json")
    assert reviewed.review["gates_sha256"] == sha256_file(edited)
    assert reviewed.review["automatic_criterion"] == analysis.result.criterion
    assert json.loads((out / "result.json").read_text())["cd125_pos_events"] == analysis.result.cd125_pos_events


def test_gates_without_a_cd125_gate_are_refused(near50, tmp_path):
    _, out = near50
    text = re.sub(r'<gating:RectangleGate gating:id="cd125_pos".*?</gating:RectangleGate>', "",
                  (out / "gates.xml").read_text(), flags=re.S)
    edited = tmp_path / "no_cd125.xml"
    edited.write_text(text)
    with pytest.raises(InputError, match="the edited gates have no 'cd125_pos' gate"):
        regate.regate_result(out / "result.json", edited, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_regate_command_names_the_reviewer(near50, tmp_path, capsys):
    from cd125gate import cli

    _, out = near50
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\tgates_sha256\n"
                       f"near50_fmo\t{sha256_file(out / 'result.json')}\tREGATE\tDr Ada\t2026-11-30\t"
                       f"tighter blast gate\t{out / 'gates.xml'}\t{sha256_file(out / 'gates.xml')}\n")
    target = tmp_path / "reviewed_result.json"
    argv = ["regate", str(out / "result.json"), "--gates", str(out / "gates.xml"), "--out", str(target),
            "--reviews", str(reviews)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("reviewed near50_fmo: ")
    review = json.loads(target.read_text())["review"]
    assert (review["reviewer"], review["date"], review["reason"]) == ("Dr Ada", "2026-11-30", "tighter blast gate")


# --- edited gates checked before any job (issue 18) -------------------------------------------------

CD125_GATE = r'(<gating:RectangleGate gating:id="cd125_pos" gating:parent_id=")blasts(">\s*<gating:dimension[^>]*>\s*' \
             r'<data-type:fcs-dimension data-type:name=")PE-A(")'


def edit(gates_xml, tmp_path, change):
    edited = tmp_path / "edited.xml"
    edited.write_text(change(gates_xml.read_text()))
    return edited


@pytest.mark.parametrize("change, problem", [
    (lambda t: t[: len(t) // 2], "not a usable Gating-ML 2.0 document"),
    (lambda t: t.replace('gating:id="blasts"', 'gating:id="blasts2"').replace(
        'gating:parent_id="blasts"', 'gating:parent_id="blasts2"'), "the edited gates have no 'blasts' gate"),
    (lambda t: re.sub(CD125_GATE, r"\g<1>blast_region\g<2>PE-A\g<3>", t), "must sit directly under 'blasts'"),
    (lambda t: re.sub(CD125_GATE, r"\g<1>blasts\g<2>PE-Cy9-A\g<3>", t),
     "gate 'cd125_pos' uses channel(s) PE-Cy9-A, which near50_fmo_stained.fcs does not have"),
    (lambda t: t.replace('<data-type:fcs-dimension data-type:name="PE-A"/>',
                         '<data-type:fcs-dimension data-type:name="PE-Q-A"/>', 2),
     "compensation matrix 'spill' names channel(s) PE-Q-A, which near50_fmo_stained.fcs does not have"),
])
def test_edited_gates_are_checked_on_the_sample_tubes(near50, tmp_path, change, problem):
    _, out = near50
    edited = edit(out / "gates.xml", tmp_path, change)
    tubes = [TEST_DATA / "near50_fmo_stained.fcs", TEST_DATA / "near50_fmo_control.fcs"]
    with pytest.raises(InputError) as err:
        regate.check_edited_gates(edited, tubes)
    assert str(err.value).startswith(f"{edited}: ")
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_the_bundled_gates_pass_the_check(near50):
    _, out = near50
    regate.check_edited_gates(out / "gates.xml", [TEST_DATA / "near50_fmo_stained.fcs"])


def test_an_unknown_channel_at_regate_time_blames_the_gates_not_the_tube(near50, tmp_path):
    _, out = near50
    edited = edit(out / "gates.xml", tmp_path, lambda t: re.sub(CD125_GATE, r"\g<1>blasts\g<2>PE-Cy9-A\g<3>", t))
    with pytest.raises(InputError) as err:
        regate.regate_result(out / "result.json", edited, tmp_path / "r.json")
    assert str(err.value).startswith(f"{edited} (applied to ")


def test_gates_that_are_not_the_ones_signed_are_refused(near50, tmp_path):
    from cd125gate.review.reviews import Review

    _, out = near50
    review = Review("near50_fmo", sha256_file(out / "result.json"), "REGATE", "Dr Ada", "2026-11-30", "x",
                    out / "gates.xml", "reviews.tsv", 2, "0" * 64)
    with pytest.raises(InputError, match="not the gates file reviews.tsv: line 2 signed"):
        regate.regate_result(out / "result.json", out / "gates.xml", tmp_path / "r.json", review=review)
    assert not (tmp_path / "r.json").exists()


def test_the_reviewed_result_is_written_whole_to_each_path(near50, tmp_path):
    _, out = near50
    regate.regate_result(out / "result.json", out / "gates.xml", tmp_path / "a.json",
                         copies=[tmp_path / "b.json"])
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_regate_command_records_a_failure_instead_of_failing(near50, tmp_path, capsys):
    from cd125gate import cli

    _, out = near50
    edited = edit(out / "gates.xml", tmp_path, lambda t: re.sub(CD125_GATE, r"\g<1>blasts\g<2>PE-Cy9-A\g<3>", t))
    folder = tmp_path / "reviewed" / "0123456789abcdef"
    argv = ["regate", str(out / "result.json"), "--gates", str(edited), "--out", str(folder / "reviewed_result.json"),
            "--failure", str(folder / "failed.txt")]
    assert cli.main(argv) == 0
    problem = (folder / "failed.txt").read_text()
    assert problem.startswith(f"{edited} (applied to near50_fmo_stained.fcs): ") and problem.count("\n") == 1
    assert not (folder / "reviewed_result.json").exists()
    assert problem.strip() in capsys.readouterr().err
