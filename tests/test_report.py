"""The batch review page: content, order, escaping, determinism and bad input."""

import base64
import io
import json
import re

import numpy as np
import pytest

from cd125gate import cli
from cd125gate.review import report, report_samples, reviews

EVIL = '<script>alert("x")</script>&\'"'


def tiny_png(seed):
    """A small real PNG, different per seed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.4, 0.3), dpi=50)
    fig.figimage(np.random.default_rng(seed).random((15, 20)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def make_result(sample_id, criterion, fraction=0.6, reasons=(), flags=(), notes=None):
    blasts = 1000
    gates = [{"name": "blasts", "parent": "blast_region", "count": blasts, "parent_count": 1200,
              "percent_of_parent": 83.3, "note": "blast region minus exclusions"},
             {"name": "basophils", "parent": "blast_region", "count": 200, "parent_count": 1200,
              "percent_of_parent": 16.7, "exclusion": True}]
    failed = criterion == "FAILED"
    return {
        "schema_version": "1", "sample_id": sample_id, "criterion": criterion, "reasons": list(reasons),
        "flags": list(flags), "warnings": [], "notes": notes,
        "cd125_pos_fraction": None if failed else fraction,
        "ci_low": None if failed else fraction - 0.03, "ci_high": None if failed else fraction + 0.03,
        "blast_events": None if failed else blasts,
        "cd125_pos_events": None if failed else int(fraction * blasts),
        "criterion_settings": {"positive_fraction": 0.5},
        "threshold": None if failed else {"method": "control_percentile", "value": 0.31, "value_raw": 412.0,
                                          "percentile": 99.5, "reference_events": 900,
                                          "description": "99.5th percentile of 900 control blasts",
                                          "overlap": {"cumulative_subtraction": 0.4321, "tolerance": 0.03,
                                                      "missed": False}},
        "gates": [] if failed else gates,
        "inputs": {"fcs": {"path": f"runs/{sample_id}.fcs", "sha256": "ab" * 32}},
        "outputs": {"result": "result.json", "qc": "qc.png"},
        "provenance": {"cd125gate_version": "0.1.0", "config_digest": "c0" * 32},
    }


def write_sample(results_dir, folder, result, png=True, seed=0, keys=True):
    """A sample's folder: result.json, qc.png and (for a gated result) its key panels, as `plot_sample` writes them."""
    sample_dir = results_dir / folder
    sample_dir.mkdir(parents=True)
    (sample_dir / "result.json").write_text(json.dumps(result))
    if png:
        (sample_dir / "qc.png").write_bytes(tiny_png(seed))
    if png and keys and result["gates"]:
        for n, name in enumerate(("qc_key_blast_gate.png", "qc_key_cd125.png")):
            (sample_dir / name).write_bytes(tiny_png(100 + 2 * seed + n))
    return sample_dir


def make_batch(root):
    """Five samples, one of each criterion plus an evil sample id; returns the results folder."""
    results = root / "samples"
    write_sample(results, "P1", make_result("P1", "MET", 0.81), seed=1)
    write_sample(results, "P2", make_result("P2", "NOT_MET", 0.12), seed=2)
    write_sample(results, "P3", make_result("P3", "REVIEW", 0.52, reasons=["CI straddles 50%"],
                                            flags=["time QC removed 30% of events"]), seed=3)
    write_sample(results, "P4", make_result("P4", "FAILED", reasons=["only 120 events after time QC"]), seed=4)
    evil_dir = write_sample(results, "P5", make_result(EVIL, "MET", 0.7, notes=EVIL,
                                                       flags=["time QC removed 30% of events"]), seed=5)
    (evil_dir / "qc_control.png").write_bytes(tiny_png(6))
    return results


def build(tmp_path, *extra):
    out = tmp_path / "report.html"
    code = cli.main(["report", "--results-dir", str(tmp_path / "samples"), "--out", str(out), *extra])
    assert code == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture
def batch(tmp_path):
    return make_batch(tmp_path)


def test_page_has_a_row_a_card_and_the_figures_of_every_sample(batch, tmp_path):
    page = build(tmp_path)
    assert len(re.findall(r"<tr class=\"row-", page)) == 5
    assert len(re.findall(r"<section class=\"card", page)) == 5
    # Each figure: a small thumbnail inline, the full figure (same bytes) as a file beside the page.
    ids = re.findall(r'<section class="card[^"]*" id="s(\d+)" data-criterion="\w+" data-sample-id="([^"]*)"', page)
    assert len(ids) == 5
    for index, sample_id in ids:
        folder = sample_id if sample_id in ("P1", "P2", "P3", "P4") else "P5"  # P5 holds the evil id
        full = (batch / folder / "qc.png").read_bytes()
        assert (tmp_path / "report_files" / f"s{index}" / "qc.png").read_bytes() == full
        assert f'href="report_files/s{index}/qc.png"' in page
        assert base64.b64encode(full).decode() not in page
    assert page.count("data:image/jpeg;base64,") == 5  # the five qc.png; qc_control.png is a link
    control = next((tmp_path / "report_files").glob("s*/qc_control.png"))
    assert control.read_bytes() == (batch / "P5" / "qc_control.png").read_bytes()
    assert f'href="report_files/{control.parent.name}/qc_control.png"' in page
    # provenance and gate counts reach the card
    assert "ab" * 32 in page and "c0" * 32 in page and "blast region minus exclusions" in page


def test_the_printed_key_plots_are_the_key_panel_files(batch, tmp_path):
    page = build(tmp_path)
    index = re.search(r'id="s(\d+)" data-criterion="MET" data-sample-id="P1"', page).group(1)
    for name in ("blast_gate", "cd125"):
        printed = tmp_path / "report_files" / f"s{index}" / f"key_{name}.png"
        assert printed.read_bytes() == (batch / "P1" / f"qc_key_{name}.png").read_bytes()
        assert f'<img src="report_files/s{index}/key_{name}.png" loading="lazy" class="key"' in page
    # Not figures of their own: no thumbnail, no link, no copy under their own name.
    assert "qc_key_" not in page and not list((tmp_path / "report_files").glob("*/qc_key_*"))
    samples = report_samples.load_samples(batch)
    assert all(not name.startswith("qc_key") for s in samples for name, _ in s.figures)


def test_a_folder_without_key_panels_is_an_incomplete_output(tmp_path):
    """Written by an earlier version: the page says so, on screen and in print, and cuts nothing from qc.png."""
    write_sample(tmp_path / "samples", "P1", make_result("P1", "MET", 0.81), seed=1, keys=False)
    page = build(tmp_path)
    assert "Incomplete outputs (1)" in page
    # In the summary of incomplete outputs, the table row, the card and its printed page.
    assert page.count("No key panels (qc_key_blast_gate.png, qc_key_cd125.png) beside qc.png") == 4
    assert '<p class="missing print-only">No key panels' in page
    assert 'class="key"' not in page and not list((tmp_path / "report_files").glob("*/key_*"))


def test_page_is_self_contained(batch, tmp_path):
    page = build(tmp_path)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_user_text_is_escaped(batch, tmp_path):
    page = build(tmp_path)
    assert EVIL not in page
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;" in page
    assert page.count("<script>") == 1  # only the page's own script


def test_same_results_give_the_same_bytes(batch, tmp_path):
    first = build(tmp_path)
    assert build(tmp_path) == first


def test_summary_lists_failed_then_review_first_with_reasons(batch, tmp_path):
    page = build(tmp_path)
    attention = page[page.index('class="attention"'):page.index("</div>", page.index('class="attention"'))]
    assert attention.index("P4") < attention.index("P3")
    assert "only 120 events after time QC" in attention and "CI straddles 50%" in attention
    assert "P1" not in attention and "P2" not in attention
    counts = dict(re.findall(r'<div class="count (\w+)-box"><b>(\d+)</b>', page))
    assert counts == {"FAILED": "1", "REVIEW": "1", "NOT_MET": "1", "MET": "2"}
    # a flag shared by two samples is counted once per sample
    assert re.search(r"time QC removed 30% of events</td><td class=\"num\">2<", page)


def test_table_row_carries_fraction_ci_blasts_and_method(batch, tmp_path):
    page = build(tmp_path)
    row = re.search(r'<tr class="row-REVIEW".*?</tr>', page).group(0)
    assert "52.0% (49.0–55.0)" in row and "1,000" in row and "control_percentile" in row
    assert 'data-sort="0.52"' in row
    failed = re.search(r'<tr class="row-FAILED".*?</tr>', page).group(0)
    assert 'data-sort="-1"' in failed


def test_card_shows_the_threshold_and_the_dim_cd125_guard(batch, tmp_path):
    page = build(tmp_path)
    assert "cut-off 412 raw" in page
    assert "cumulative subtraction 43.2%" in page


def test_screening_order_missing_and_extra_samples(batch, tmp_path):
    screening = tmp_path / "screening.json"
    screening.write_text(json.dumps({"samples": [{"sample_id": "P3"}, {"sample_id": "P9"}, {"sample_id": "P1"},
                                                 {"sample_id": "P2"}, {"sample_id": "P4"}]}))
    page = build(tmp_path, "--screening", str(screening))
    ids = re.findall(r'<tr class="row-\w+" data-criterion="\w+"><td><a href="#s\d+">([^<]+)</a>', page)
    assert ids == ["P3", "P9", "P1", "P2", "P4"]  # the folder not in screening.json is left out
    assert "listed in screening.json but no result.json was found" in page
    row = re.search(r'<tr class="row-FAILED" data-criterion="FAILED"><td><a href="#s1">P9</a>', page)
    assert row is not None


def test_missing_figure_is_shown_not_hidden(tmp_path):
    write_sample(tmp_path / "samples", "P1", make_result("P1", "MET"), png=False)
    page = build(tmp_path)
    assert "No QC figure" in page and "no QC figure (qc.png) in its results folder" in page
    assert "Incomplete outputs (1)" in page


@pytest.mark.parametrize("setup, expected", [
    (lambda d: None, "results folder does not exist"),
    (lambda d: d.mkdir(), "no */result.json found"),
    (lambda d: (d / "P1").mkdir(parents=True) or (d / "P1" / "result.json").write_text("{oops"),
     "P1/result.json: cannot read result"),
    (lambda d: write_sample(d, "P1", {**make_result("P1", "MET"), "criterion": "MAYBE"}),
     "P1/result.json: not a cd125gate result: criterion: 'MAYBE' is not one of"),
    (lambda d: write_sample(d, "A", make_result("P1", "MET")) and write_sample(d, "B", make_result("P1", "MET")),
     "B/result.json: sample id 'P1' is also the id of"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, setup, expected):
    results = tmp_path / "samples"
    setup(results)
    code = cli.main(["report", "--results-dir", str(results), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cd125gate: ") and err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "r.html").exists()


def test_bad_screening_file_is_named(batch, tmp_path, capsys):
    screening = tmp_path / "screening.json"
    screening.write_text(json.dumps({"rows": []}))
    code = cli.main(["report", "--results-dir", str(batch), "--out", str(tmp_path / "r.html"),
                     "--screening", str(screening)])
    assert code == 2
    assert f"{screening}: screening file needs a 'samples' list" in capsys.readouterr().err


def test_real_qc_figures_embed(tmp_path):
    """plot_failure's qc.png (what the workflow writes for a FAILED tube) reaches the page unchanged."""
    from cd125gate import results
    from cd125gate.figures import plots

    result = make_result("P7", "FAILED", reasons=["unreadable FCS"])
    sample_dir = write_sample(tmp_path / "samples", "P7", result, png=False)
    plots.plot_failure(results.SampleResult.from_json(result), sample_dir)
    samples = report_samples.load_samples(tmp_path / "samples")
    assert [name for name, _ in samples[0].figures] == ["qc.png"]
    report.write_page(samples, tmp_path / "report.html")
    assert (tmp_path / "report_files/s0/qc.png").read_bytes() == (sample_dir / "qc.png").read_bytes()
    page = (tmp_path / "report.html").read_text()
    thumbnail = base64.b64decode(re.search(r"data:image/jpeg;base64,([^\"]+)", page).group(1))
    from PIL import Image

    assert Image.open(io.BytesIO(thumbnail)).size[0] == report.THUMBNAIL_PX


def test_earlier_reviews_lines_are_read_as_written(tmp_path):
    """The page's reviews file starts from the batch's: cells as written, comments and blank lines left out."""
    path = tmp_path / "reviews.tsv"
    path.write_bytes("\ufeffsample_id\tresult_sha256\tdecision\treviewer\tdate\treason\tgates\r\n"
                     "# sitting of 30 Nov\r\n"
                     f"P1\t{'a' * 64}\tACCEPT\tDr Ada\t2026-11-30\t\t\r\n\r\n"
                     f"P2\t{'b' * 64}\tREGATE\tDr Bo\t2026-12-01\t\"cut-off; too low\"\tedited/P2.xml\r\n"
                     .encode("utf-8"))
    lines = report_samples.earlier_lines(path)
    assert [line["sample_id"] for line in lines] == ["P1", "P2"]
    assert lines[1]["reason"] == "cut-off; too low" and lines[1]["gates"] == "edited/P2.xml"
    page = report.render([], earlier=lines)
    data = json.loads(re.search(r'<script type="application/json" id="reviews-data">(.*?)</script>', page,
                                re.S).group(1))
    assert data["earlier"] == lines and data["columns"] == list(reviews.COLUMNS)
