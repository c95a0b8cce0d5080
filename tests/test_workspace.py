"""batch.wsp: every tube's gates, transforms and matrix in one FlowJo workspace that FlowKit reads back."""

import json
import re
import warnings
from pathlib import Path

import flowkit as fk
import pytest

from cd125gate import cli
from cd125gate.analysis import pipeline as analyze
from cd125gate.results import outputs
from cd125gate.review import regate

ROOT = Path(__file__).parents[1]
SAMPLES = ("low_fmo", "high_isotype", "clog", "low_nocontrol", "corrupt")


def edit(gates_xml, edited, *substitutions):
    """A reviewer's hand edit of ``gates_xml``: each (pattern, replacement) applied exactly once."""
    text = gates_xml.read_text()
    for pattern, replacement in substitutions:
        text, n = re.subn(pattern, replacement, text, flags=re.S)
        assert n == 1, pattern
    edited.write_text(text)
    return edited


CUTOFF = (r'(<gating:RectangleGate gating:id="cd125_pos"[^>]*>\s*<gating:dimension[^>]*gating:min=")[^"]+(")',
          r"\g<1>0.9\g<2>")
# A second removed time window, so that time_qc keeps the events outside both: Gating-ML's
# "and" of two complemented references, which FlowJo writes as an AndNode of two NotNodes.
SECOND_WINDOW = (r'<gating:BooleanGate gating:id="time_qc">.*?</gating:BooleanGate>',
                 '<gating:RectangleGate gating:id="time_anomaly_2"><gating:dimension gating:compensation-ref="uncompensated" gating:min="5" gating:max="9">'
                 '<data-type:fcs-dimension data-type:name="Time"/></gating:dimension></gating:RectangleGate>'
                 '<gating:BooleanGate gating:id="time_qc"><gating:and>'
                 '<gating:gateReference gating:ref="time_anomaly_1" gating:use-as-complement="true"/>'
                 '<gating:gateReference gating:ref="time_anomaly_2" gating:use-as-complement="true"/>'
                 '</gating:and></gating:BooleanGate>')


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Five samples analysed into OUT/samples/, two of them re-gated by hand-edited gates."""
    out = tmp_path_factory.mktemp("wsp")
    paths = []
    for sid in SAMPLES:
        control = ROOT / "test_data" / f"{sid}_control.fcs"
        analysis = analyze.analyze_sample(ROOT / "test_data" / f"{sid}_stained.fcs",
                                          control if control.is_file() else None, sample_id=sid)
        outputs.write_outputs(analysis, out / "samples" / sid)
        paths.append(out / "samples" / sid / "result.json")
    reviewed = []
    for sid, edits in (("low_fmo", [CUTOFF]), ("clog", [CUTOFF, SECOND_WINDOW])):
        folder = out / "samples" / sid
        gates = edit(folder / "gates.xml", out / f"edited_{sid}.xml", *edits)
        regate.regate_result(folder / "result.json", gates)
        reviewed.append(folder / regate.REVIEWED_RESULT)
    return out, paths, reviewed


def flowkit_counts(wsp):
    """tube name -> {gate: count}, as FlowKit finds the FCS files from the workspace and counts them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # FlowKit 1.3 reads the DataSet uris only when asked to (it loads no FCS file otherwise).
        workspace = fk.Workspace(wsp, find_fcs_files_from_wsp=True)
        workspace.analyze_samples(use_mp=False)
    report = workspace.get_analysis_report()
    counts = {}
    for _, row in report.iterrows():
        counts.setdefault(row["sample_id"], {})[row["gate_name"]] = int(row["count"])
    return workspace, counts


def test_workspace_opens_where_it_lies_with_every_tube_and_our_counts(batch, capsys, monkeypatch):
    out, paths, reviewed = batch
    wsp = out / "batch.wsp"
    assert cli.main(["workspace", *map(str, paths), "--out", str(wsp), "--reviewed", *map(str, reviewed)]) == 0
    assert "11 gated tubes of 5 samples (2 re-gated)" in capsys.readouterr().out
    monkeypatch.chdir(out)  # the FCS files are found from the workspace's own folder
    workspace, theirs = flowkit_counts("batch.wsp")

    ours = {}
    for path in paths + reviewed:
        result = json.loads(path.read_text())
        suffix = " re-gated" if path in reviewed else ""
        for tube, key in (("stained", "gates"), ("control", "control_gates")):
            if result.get(key):
                ours[f"{result['sample_id']} {tube}{suffix}"] = {g["name"]: g["count"] for g in result[key]}
    assert sorted(theirs) == sorted(ours)  # every tube but the corrupt one's, controls included
    for name, counts in ours.items():
        # FlowJo's form of a complemented operand adds one population per removed window.
        extra = {gate for gate in theirs[name] if gate.startswith("not time_anomaly_")}
        assert {gate: n for gate, n in theirs[name].items() if gate not in extra} == counts, name
    assert set(theirs["clog stained re-gated"]) - set(ours["clog stained re-gated"]) == \
        {"not time_anomaly_1", "not time_anomaly_2"}
    # The time QC is a Boolean gate that removes events, and the edited one removes more.
    assert ours["clog stained"]["time_anomaly_1"] > 0
    assert theirs["clog stained re-gated"]["time_qc"] < theirs["clog stained"]["time_qc"]
    # The re-gated counts differ from the automatic ones: the edited cut-off is in the workspace.
    assert theirs["low_fmo stained re-gated"]["cd125_pos"] != theirs["low_fmo stained"]["cd125_pos"]
    assert sorted(workspace.get_sample_ids(group_name="re-gated")) == \
        ["clog control re-gated", "clog stained re-gated", "low_fmo control re-gated", "low_fmo stained re-gated"]
    # Each tube keeps its own transforms: logicle widths are fitted per sample.
    widths = {sid: workspace.get_transform(f"{sid} stained", "Comp-PE-A").param_w for sid in SAMPLES[:3]}
    assert len(set(widths.values())) > 1


def test_uris_are_relative_to_the_workspace_folder(batch, capsys):
    out, paths, _ = batch
    wsp = out / "nested" / "deeper" / "batch.wsp"
    wsp.parent.mkdir(parents=True)
    assert cli.main(["workspace", str(paths[0]), "--out", str(wsp)]) == 0
    uris = re.findall(r'<DataSet uri="([^"]+)"', wsp.read_text())
    assert len(uris) == 2 and not any(uri.startswith("/") for uri in uris)
    assert all((wsp.parent / uri).resolve().is_file() for uri in uris)
    _, theirs = flowkit_counts(str(wsp))  # from another folder than the workspace's
    assert sorted(theirs) == ["low_fmo control", "low_fmo stained"]


def test_a_batch_without_one_gated_sample_still_gets_its_workspace(batch, capsys):
    out, paths, _ = batch
    wsp = out / "only_failed.wsp"
    chosen = [p for p in paths if p.parent.name == "corrupt"]
    assert cli.main(["workspace", *map(str, chosen), "--out", str(wsp)]) == 0
    assert "0 gated tubes of 1 samples" in capsys.readouterr().out
    assert "<SampleList/>" in wsp.read_text()
