"""The per-sample sign-out PDF: one A4 page, the key panels drawn beside the QC figure, user text never mathtext."""

import re
from pathlib import Path

import pytest

from cd125gate import cli
from cd125gate.analysis import pipeline as analyze
from cd125gate.results import outputs
from cd125gate.review import signout

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("signout") / "samples" / "near50_fmo"
    analysis = analyze.analyze_sample(ROOT / "test_data/near50_fmo_stained.fcs", ROOT / "test_data/near50_fmo_control.fcs",
                                      sample_id="near50_fmo", meta={"patient_id": "SIM-003", "specimen": "bone marrow"})
    outputs.write_outputs(analysis, out)
    return out


def pdf_pages(data):
    """Page objects and their MediaBox sizes in points, read from the PDF's own object dictionaries."""
    pages = re.findall(rb"/Type\s*/Page\b(?!s)", data)
    boxes = [tuple(float(v) for v in box.split()) for box in re.findall(rb"/MediaBox\s*\[([^\]]*)\]", data)]
    return len(pages), boxes


def test_key_panels_are_drawn_beside_the_qc_figure_at_the_pages_panel_size(sample):
    import io
    import json

    from PIL import Image

    from cd125gate.figures import plots, raster

    result = json.loads((sample / "result.json").read_text())
    assert result["outputs"]["qc_key_blast_gate_png"] == "qc_key_blast_gate.png"
    assert result["outputs"]["qc_key_cd125_png"] == "qc_key_cd125.png"
    from cd125gate import results

    panels = signout.record_key_panels(sample, results.load(sample / "result.json"))
    assert [name for name, _ in panels.panels] == ["blast_gate", "cd125"] and panels.missing is None
    # Each panel's Axes is the page's panel Axes (the width is the same on any page); the title sets the height.
    page_height = Image.open(sample / "qc.png").size[1] / raster.DPI
    rows = round((page_height - plots.HEADER_INCHES - plots.FOOTER_INCHES) / plots.PANEL_INCHES[1])
    axes_width, axes_height = plots._panel_inches(rows * plots.NCOLS)
    for (name, png), lines in zip(panels.panels, (3, 1)):   # the CD45 panel names three gates
        assert png == (sample / f"qc_key_{name}.png").read_bytes()
        width, height = Image.open(io.BytesIO(png)).size
        assert width == int((plots.KEY_LEFT + axes_width + plots.KEY_RIGHT) * raster.DPI)
        assert height == int((plots.KEY_BOTTOM + axes_height + plots.KEY_TOP + lines * plots.TITLE_LINE_INCHES)
                             * raster.DPI)
    failure = sample.parent / "failed"
    analysis = analyze.analyze_sample(ROOT / "test_data/corrupt_stained.fcs", sample_id="corrupt")
    outputs.write_outputs(analysis, failure)
    assert not list(failure.glob("*key*"))
    assert signout.record_key_panels(failure, analysis.result) == signout.KeyPanels()   # a card: nothing to print


def test_the_signout_page_shows_the_key_panel_files(sample, monkeypatch):
    import numpy as np
    from PIL import Image

    from cd125gate import results

    result = results.load(sample / "result.json")
    seen = {}
    original = signout.signout_figure

    def spy(*args, **kwargs):
        fig = original(*args, **kwargs)
        seen["images"] = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
        seen["texts"] = "\n".join(t.get_text() for t in fig.texts)
        return fig

    monkeypatch.setattr(signout, "signout_figure", spy)
    signout.write_signout(sample.parent / "page.pdf", result, None, signout.record_key_panels(sample, result))
    files = [np.asarray(Image.open(sample / f"qc_key_{name}.png").convert("RGB")) for name in ("blast_gate", "cd125")]
    assert len(seen["images"]) == 2
    assert all(shown.shape == file.shape and (shown == file).all() for shown, file in zip(seen["images"], files))


def test_a_folder_without_key_panels_says_so(sample, tmp_path):
    """A folder written by an earlier version: its QC figure, no key panel files. No panel is cut from the figure."""
    import shutil

    from cd125gate import results

    old = tmp_path / "near50_fmo"
    shutil.copytree(sample, old)
    for path in old.glob("qc_key_*.png"):
        path.unlink()
    result = results.load(old / "result.json")
    panels = signout.record_key_panels(old, result)
    assert not panels.panels and "earlier cd125gate" in panels.missing and "qc_key_cd125.png" in panels.missing
    fig = signout.signout_figure(result, None, panels)
    assert not any(ax.images for ax in fig.axes)
    assert any(panels.missing[:40] in t.get_text() for t in fig.texts)
    (old / "qc.png").unlink()
    assert signout.record_key_panels(old, result) == signout.KeyPanels(missing=signout.NO_FIGURE)


def test_gate_tree_nests_children_under_parents():
    from cd125gate.results import GateCount

    gates = [GateCount("a", None, 10, 10, 100.0), GateCount("b", "a", 5, 10, 50.0),
             GateCount("c", "b", 1, 5, 20.0, exclusion=True), GateCount("d", "a", 2, 10, 20.0)]
    assert signout.gate_tree(gates) == ["a  10  (100.0%)", "  └ b  5  (50.0%)", "    └ c (excluded)  1  (20.0%)",
                                        "  └ d  2  (20.0%)"]


def test_signout_is_one_a4_page_and_user_text_is_not_mathtext(sample, tmp_path):
    from cd125gate import results
    from cd125gate.review.screening import ScreeningRow

    result = results.load(sample / "result.json").replace(notes=r"$\alpha")
    row = ScreeningRow(result.sample_id, result.criterion, final="NOT_MET", review_decision="OVERRIDE_NOT_MET",
                       reviewed_by="Dr $x^2$", reviewed_at="2026-11-30", review_reason=r"dim $\frac{ tail$ costs $5",
                       instrument="Canto $II")
    path = tmp_path / "signout.pdf"
    signout.write_signout(path, result, row, signout.record_key_panels(sample, result))  # mathtext would raise here
    count, boxes = pdf_pages(path.read_bytes())
    assert count == 1
    assert boxes and all(abs(w - 595.44) < 1 and abs(h - 841.68) < 1 for _, _, w, h in boxes)
    lines = signout.decision_lines(result, row)
    assert any(r"dim $\frac{ tail$ costs $5" in line for line in lines)


def test_signout_command_writes_one_pdf_per_sample(sample, capsys):
    results = sample.parent
    screening = results.parent / "screening.json"
    assert cli.main(["screening", str(sample / "result.json"), "--tsv", str(results.parent / "s.tsv"),
                     "--json", str(screening)]) == 0
    assert cli.main(["signout", "--screening", str(screening), "--results-dir", str(results)]) == 0
    assert "1 sign-out records written" in capsys.readouterr().out
    assert pdf_pages((sample / "signout.pdf").read_bytes())[0] == 1


def _has_colour(png, hex_colour, tolerance=12):
    """Whether a PNG holds pixels of ``hex_colour`` (an outline drawn in that colour)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(pixels - target).max(axis=2) <= tolerance).any())


def test_the_printed_page_leads_with_the_cd45_ssc_blast_gate(sample):
    from cd125gate.figures import qc_panels

    blast_gate, cd125 = ((sample / f"qc_key_{name}.png").read_bytes() for name in ("blast_gate", "cd125"))
    # The CD45 / SSC-A panel: the blast region in red and the reference lymphocytes in purple;
    # not the basophil-exclusion panel (basophils in magenta).
    assert _has_colour(blast_gate, qc_panels.PANEL_COLOURS[1]) and _has_colour(blast_gate, qc_panels.PANEL_COLOURS[2])
    assert not _has_colour(blast_gate, qc_panels.EXCLUSION_COLOURS[0])
    assert _has_colour(cd125, qc_panels.THRESHOLD_COLOUR) and not _has_colour(cd125, qc_panels.PANEL_COLOURS[2])
