"""The review page in a real browser: headless Chromium runs its script, sorts, filters, renders.

Chromium is driven from the command line (no driver package): `--dump-dom`
returns the DOM after the page's scripts ran, console messages (uncaught
errors included) go to stderr with `--enable-logging=stderr`, and a small
script appended to a copy of the page clicks the table like a reviewer would.
"""

import re

import pytest

from cd125gate import cli
from conftest import chromium, driver_out
from test_report import make_batch

# Clicks the "CD125+ %" header twice and unticks MET, recording what the reviewer would see.
DRIVER = """<script>
(function () {
  function visibleIds() {
    return Array.prototype.filter.call(document.querySelectorAll("#samples tbody tr"), function (r) {
      return !r.hidden; }).map(function (r) { return r.cells[0].textContent; });
  }
  var out = {};
  var th = document.querySelectorAll("#samples th");
  th[2].click(); out.ascending = visibleIds();
  th[2].click(); out.descending = visibleIds();
  var met = document.querySelector('#filters input[value="MET"]');
  met.checked = false; met.dispatchEvent(new Event("change"));
  out.withoutMet = visibleIds();
  out.cardsShown = Array.prototype.filter.call(document.querySelectorAll(".card"), function (c) {
    return !c.hidden; }).length;
  out.status = document.getElementById("shown").textContent;
  var pre = document.createElement("pre"); pre.id = "driver-out"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
</body>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    make_batch(root)
    assert cli.main(["report", "--results-dir", str(root / "samples"), "--out", str(root / "report.html")]) == 0
    return root / "report.html"


def body_attributes(dom):
    return dict(re.findall(r'(data-[\w-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom).group(0)))


@pytest.mark.slow
def test_page_renders_without_script_errors(page, tmp_path):
    dom, console = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert console == []
    attrs = body_attributes(dom)
    assert "data-js-error" not in attrs
    assert attrs["data-ready"] == "1"
    assert attrs["data-rows"] == "5" and attrs["data-shown"] == "5"
    assert attrs["data-images"] == "5"  # five qc.png thumbnails (qc_control.png is a link)


@pytest.mark.slow
def test_filter_link_shows_only_the_chosen_criteria(page, tmp_path):
    dom, console = chromium(tmp_path, "--dump-dom", page.as_uri() + "#filter=REVIEW,FAILED")
    assert console == []
    assert body_attributes(dom)["data-shown"] == "2"
    visible = re.findall(r'<tr class="row-(\w+)" data-criterion="\w+">', dom)
    hidden = re.findall(r'<tr class="row-(\w+)" data-criterion="\w+" hidden="">', dom)
    assert sorted(visible) == ["FAILED", "REVIEW"]
    assert sorted(hidden) == ["MET", "MET", "NOT_MET"]


@pytest.mark.slow
def test_sorting_and_filtering_by_clicks(page, tmp_path):
    driven = tmp_path / "driven.html"
    driven.write_text(page.read_text(encoding="utf-8").replace("</body>", DRIVER), encoding="utf-8")
    dom, console = chromium(tmp_path, "--dump-dom", driven.as_uri())
    assert console == []
    out = driver_out(dom)
    evil = '<script>alert("x")</script>&\'"'
    # CD125+ fractions: P4 none (-1), P2 12%, P3 52%, evil 70%, P1 81%
    assert out["ascending"] == ["P4", "P2", "P3", evil, "P1"]
    assert out["descending"] == ["P1", evil, "P3", "P2", "P4"]
    assert out["withoutMet"] == ["P3", "P2", "P4"]
    assert out["cardsShown"] == 3
    assert out["status"] == "3 of 5 samples shown"


@pytest.mark.slow
def test_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1100", "--hide-scrollbars", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    print(f"screenshot: {shot}")
