"""Real instruments' tubes end in a result with reasons: no "not found", no traceback.

The Beckman FC500 tubes of test_data/realdata (leukemia work-up, 2005; see its README)
name their stains `CD45-ECD`, `HLA-DR-FITC`, `CD34-PC5`, their scatter `FS Lin` /
`SS Log` (log-amplified), and were compensated by the instrument. They carry no CD125:
CD38 stands in for it here, with the isotype tube 1 as the control.
"""

import json
from pathlib import Path

import pytest
import yaml

from cd125gate.cli import main
from cd125gate.settings import load_settings

REALDATA = Path(__file__).parents[1] / "test_data" / "realdata"
PAIRS = ["clarient_FI05_000599", "flowcap2_aml_UP00_000311"]


@pytest.fixture(scope="module")
def cd38_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "cd38.yaml"
    markers = {**load_settings().panel.markers, "CD125": ["CD38"]}
    path.write_text(yaml.safe_dump({"panel": {"markers": markers}}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS)
def test_an_fc500_tube_with_its_isotype_tube_ends_in_a_result_with_reasons(pair, cd38_config, tmp_path, capsys):
    status = main(["analyze", str(REALDATA / f"{pair}_tube6.fcs"), "--control", str(REALDATA / f"{pair}_tube1.fcs"),
                   "--out", str(tmp_path), "--config", str(cd38_config), "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not found" not in err
    result = json.loads((tmp_path / "result.json").read_text())
    assert status in (0, 3) and result["criterion"] in ("MET", "NOT_MET", "REVIEW")
    assert result["criterion"] != "REVIEW" or result["reasons"]
    assert not any("no compensation matrix" in r for r in result["reasons"])
    assert any("compensated by the instrument" in f for f in result["flags"]), result["flags"]
