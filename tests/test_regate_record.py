"""A re-gated sample's record is the decision: card, printed page and signout.pdf drawn from the re-gated result."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cd125gate import cli
from cd125gate.analysis import pipeline as analyze
from cd125gate.figures import regate_figure
from cd125gate.io.fileio import sha256_file
from cd125gate.results import outputs
from cd125gate.review import reviews as reviews_module
from cd125gate.review import screening, signout

ROOT = Path(__file__).parents[1]
SID = "high_fmo"
NEW_CUT = 0.45  # transformed units: the automatic cut-off is ~0.29 (212 raw)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """high_fmo analysed, re-gated from a moved CD125 cut-off through a reviews file, screened and reported."""
    root = tmp_path_factory.mktemp("record")
    folder = root / "samples" / SID
    analysis = analyze.analyze_sample(ROOT / "test_data" / f"{SID}_stained.fcs",
                                      ROOT / "test_data" / f"{SID}_control.fcs", sample_id=SID)
    outputs.write_outputs(analysis, folder)
    text, n = re.subn(r'(<gating:RectangleGate gating:id="cd125_pos"[^>]*>\s*<gating:dimension[^>]*gating:min=")'
                      r'[^"]+(")', rf"\g<1>{NEW_CUT}\g<2>", (folder / "gates.xml").read_text())
    assert n == 1
    (root / "edited.xml").write_text(text)
    reviews = root / "reviews.tsv"
    reviews.write_text("sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\tgates_sha256\n"
                       f"{SID}\t{sha256_file(folder / 'result.json')}\tREGATE\tDr Bo\t2026-12-01\t"
                       f"FMO cut-off too low\tedited.xml\t{sha256_file(root / 'edited.xml')}\n")
    # As the workflow re-gates: into the decision's folder, copied beside result.json once complete.
    line = reviews_module.latest_by_sample(reviews_module.read_reviews(reviews))[SID]
    decision = screening.reviewed_result_path(folder / "result.json", line)
    assert cli.main(["regate", str(folder / "result.json"), "--gates", str(root / "edited.xml"),
                     "--reviews", str(reviews), "--out", str(decision),
                     "--current", str(folder / "reviewed_result.json")]) == 0
    assert cli.main(["screening", str(folder / "result.json"), "--tsv", str(root / "screening.tsv"),
                     "--json", str(root / "screening.json"), "--reviews", str(reviews)]) == 0
    assert cli.main(["report", "--results-dir", str(root / "samples"), "--out", str(root / "report.html"),
                     "--screening", str(root / "screening.json")]) == 0
    return root, folder, analysis


def load(path):
    return json.loads(Path(path).read_text())


def test_the_regated_figure_is_drawn_from_the_edited_gates(batch):
    root, folder, analysis = batch
    reviewed, automatic = load(folder / "reviewed_result.json"), load(folder / "result.json")
    assert reviewed["review"]["figure_note"] is None and reviewed["outputs"]["qc_png"] == "reviewed_qc.png"
    # Beside the decision's reviewed result and beside its copy next to result.json, the same figures.
    decision = next((folder / "reviewed").iterdir())
    for name in ("reviewed_qc.png", "reviewed_qc_control.png"):
        assert (folder / name).read_bytes() == (decision / name).read_bytes()
    from cd125gate.io.gatesfile import load_gates
    from cd125gate.results import SampleResult

    stained, control, threshold = regate_figure.reviewed_tubes(SampleResult.from_json(automatic),
                                                               SampleResult.from_json(reviewed),
                                                               load_gates(root / "edited.xml"))
    # The events drawn are the blasts above the edited cut-off: the counts the record states.
    cd125 = analysis.stained.column(analysis.stained.markers["CD125"])
    expected = int((analysis.stained.step("blasts").mask & (cd125 >= NEW_CUT)).sum())
    assert stained.step("cd125_pos").count == reviewed["cd125_pos_events"] == expected
    assert control.step("cd125_pos").count == {g["name"]: g["count"] for g in reviewed["control_gates"]}["cd125_pos"]
    assert threshold.value == NEW_CUT and threshold.value != automatic["threshold"]["value"]
    # The drawn histogram panel is not the automatic one; the key panels are the result's outputs, and copied.
    assert (folder / "reviewed_qc_key_cd125.png").read_bytes() != (folder / "qc_key_cd125.png").read_bytes()
    assert reviewed["outputs"]["qc_key_cd125_png"] == "reviewed_qc_key_cd125.png"
    assert reviewed["outputs"]["qc_key_blast_gate_png"] == "reviewed_qc_key_blast_gate.png"
    for name in ("reviewed_qc_key_blast_gate.png", "reviewed_qc_key_cd125.png"):
        assert (folder / name).read_bytes() == (decision / name).read_bytes()


def test_the_card_and_its_printed_page_are_the_regated_record(batch):
    root, folder, _ = batch
    reviewed, automatic = load(folder / "reviewed_result.json"), load(folder / "result.json")
    page = (root / "report.html").read_text()
    card = page[page.index(f'data-sample-id="{SID}"'):]
    card = card[:card.index("</section>")]
    fraction = f"CD125+ {100 * reviewed['cd125_pos_fraction']:.1f}%"
    assert f"<p>{fraction}" in card and f"({reviewed['cd125_pos_events']:,} positive)" in card
    assert f"cut-off {reviewed['threshold']['value_raw']:,.4g} raw" in card
    # The automatic result beside it, and the digests that bind the two.
    comparison = card[card.index('class="comparison"'):]
    assert f"<b>Automatic result</b>: MET · CD125+ {100 * automatic['cd125_pos_fraction']:.1f}%" in comparison
    assert f"cut-off {automatic['threshold']['value_raw']:,.4g} raw" in comparison
    for digest in (sha256_file(folder / "result.json"), sha256_file(folder / "reviewed_result.json"),
                   sha256_file(root / "edited.xml")):
        assert digest in card
    # The printed key plots are the re-gated figure's.
    index = re.search(r'id="s(\d+)"', page[page.rindex("<section", 0, page.index(f'data-sample-id="{SID}"')):]).group(1)
    printed = (root / "report_files" / f"s{index}" / "key_cd125.png").read_bytes()
    assert printed == (folder / "reviewed_qc_key_cd125.png").read_bytes()
    tree = card[card.index("tree-print"):]
    assert f"cd125_pos  {reviewed['cd125_pos_events']:,}" in tree and "re-gated" in tree


def test_signout_pdf_is_the_regated_record(batch, monkeypatch):
    root, folder, _ = batch
    reviewed = load(folder / "reviewed_result.json")
    seen = {}
    original = signout.signout_figure

    def spy(*args, **kwargs):
        fig = original(*args, **kwargs)
        seen["texts"] = [t.get_text() for t in fig.texts]
        seen["images"] = [ax.images[0].get_array() for ax in fig.axes if ax.images]
        return fig

    monkeypatch.setattr(signout, "signout_figure", spy)
    assert cli.main(["signout", "--screening", str(root / "screening.json"),
                     "--results-dir", str(root / "samples")]) == 0
    text = "\n".join(seen["texts"])
    assert f"Re-gated criterion: {reviewed['criterion'].replace('_', ' ')}" in text
    assert f"{reviewed['cd125_pos_events']:,} of {reviewed['blast_events']:,} blasts" in text
    assert "Automatic result, for comparison" in text and "Automatic criterion: MET" in text
    assert sha256_file(folder / "reviewed_result.json") in text and sha256_file(root / "edited.xml") in text
    panel = np.asarray(Image.open(folder / "reviewed_qc_key_cd125.png").convert("RGB"))
    assert any(image.shape == panel.shape and (np.asarray(image) == panel).all() for image in seen["images"])


def test_a_figure_that_would_not_be_the_evidence_is_a_card_saying_why(batch, tmp_path):
    """Other settings than the automatic result's: the repeated analysis differs, so no figure is drawn."""
    from cd125gate.review import regate
    from cd125gate.settings import load_settings

    root, folder, _ = batch
    out = tmp_path / "reviewed_result.json"
    other = load_settings(overrides={"threshold": {"control_percentile": 99.0}})
    reviewed = regate.regate_result(folder / "result.json", root / "edited.xml", out, settings=other, figures=True)
    assert reviewed.regate.figure_note.startswith("repeating the analysis does not reproduce result.json")
    assert "cd125_pos" in reviewed.regate.figure_note
    assert (tmp_path / "reviewed_qc.png").is_file() and not (tmp_path / "reviewed_qc_control.png").exists()
    assert not list(tmp_path.glob("*key*"))  # a card, not panels
    assert signout.record_key_panels(tmp_path, reviewed) == signout.KeyPanels()
    # The reviewed counts are FlowKit's all the same.
    assert reviewed.cd125_pos_events == load(folder / "reviewed_result.json")["cd125_pos_events"]
