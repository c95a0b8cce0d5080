"""batch.wsp: every sample's gates, transforms and matrix in one FlowJo workspace that FlowKit reads back."""

import json
import warnings
from pathlib import Path

import flowkit as fk
import pytest

from cd125gate import analyze, cli, outputs

ROOT = Path(__file__).parents[1]
SAMPLES = ("low_fmo", "high_isotype", "diva_high", "corrupt", "clog")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("wsp")
    paths = []
    for sid in SAMPLES:
        analysis = analyze.analyze_sample(ROOT / "test_data" / f"{sid}_stained.fcs",
                                          ROOT / "test_data" / f"{sid}_control.fcs", sample_id=sid)
        outputs.write_outputs(analysis, out / sid)
        paths.append(out / sid / "result.json")
    return out, paths


def test_workspace_reads_back_in_flowkit_with_our_counts(batch, capsys):
    out, paths = batch
    wsp = out / "batch.wsp"
    assert cli.main(["workspace", *map(str, paths), "--out", str(wsp)]) == 0
    out_text = capsys.readouterr().out
    # The corrupt tube has no gates; the clog's time QC is a Boolean gate FlowKit cannot write to a
    # workspace: it is left out, said so, and the batch still gets its workspace.
    assert "3 gated samples of 5" in out_text
    assert "left out clog: FlowKit cannot write these gates as a FlowJo workspace" in out_text
    assert "left out: clog:" in wsp.read_text()
    results = {p.parent.name: json.loads(p.read_text()) for p in paths}
    fcs = [results[sid]["inputs"]["fcs"]["path"] for sid in SAMPLES[:3]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workspace = fk.Workspace(str(wsp), fcs_samples=fcs)
        workspace.analyze_samples()
    report = workspace.get_analysis_report()
    assert sorted(report["sample_id"].unique()) == sorted(Path(f).name for f in fcs)
    for sid in SAMPLES[:3]:
        rows = report[report["sample_id"] == f"{sid}_stained.fcs"]
        theirs = {row["gate_name"]: int(row["count"]) for _, row in rows.iterrows()}
        ours = {g["name"]: g["count"] for g in results[sid]["gates"]}
        assert theirs == ours, sid
    # Each sample keeps its own transforms: logicle widths are fitted per tube.
    widths = {sid: workspace.get_transform(f"{sid}_stained.fcs", "Comp-PE-A").param_w for sid in SAMPLES[:3]}
    assert len(set(widths.values())) > 1


def test_a_batch_without_one_writable_sample_still_gets_its_workspace(batch, capsys):
    out, paths = batch
    wsp = out / "only_unwritable.wsp"
    chosen = [p for p in paths if p.parent.name in ("corrupt", "clog")]
    assert cli.main(["workspace", *map(str, chosen), "--out", str(wsp)]) == 0
    assert "0 gated samples of 2" in capsys.readouterr().out
    text = wsp.read_text()
    assert "<SampleList/>" in text and "left out: clog: FlowKit cannot write" in text
