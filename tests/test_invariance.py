"""The same specimen acquired at other ADC resolutions and scatter gains gives the same answer.

Instruments write 18-, 20- or 22-bit data ($PnR 262,144 to 4,194,304: the same signal, every value
x4 or x16), and labs set FSC and SSC gains to taste. Every gate is placed relative to the tube's own
populations, so the call must not change and the CD125+ fraction must stay within a point.
"""

from dataclasses import replace

import pytest

from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.settings import load_settings
from cd125gate.simulation.simulate import CaseSpec, write_case

CASE = CaseSpec("invariant", n_events=30_000, blast_fraction=0.15, cd125_pos_fraction=0.62,
                cd125_median=1500.0, basophil_fraction=0.02, eosinophil_fraction=0.06)
VARIANTS = {
    "20-bit": dict(bits=20),
    "22-bit": dict(bits=22),
    "scatter x0.5 / x2": dict(scatter_gain=(0.5, 2.0)),
    "scatter x2 / x0.5": dict(scatter_gain=(2.0, 0.5)),
    "20-bit, scatter x1.5": dict(bits=20, scatter_gain=(1.5, 1.5)),
}


def analyse(folder, spec):
    truth = write_case(folder, spec, seed=5)
    result = analyze_sample(folder / truth["files"]["stained"], folder / truth["files"]["control"],
                            load_settings(), sample_id=spec.name).result
    return result, truth


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return analyse(tmp_path_factory.mktemp("ref"), CASE)


@pytest.mark.parametrize("name", VARIANTS)
def test_same_call_and_fraction_across_instruments(tmp_path, reference, name):
    base, truth = reference
    assert base.criterion == "MET" and abs(base.cd125_pos_fraction - truth["true_fraction"]) < 0.01
    result, _ = analyse(tmp_path, replace(CASE, **VARIANTS[name]))
    assert result.criterion == base.criterion, result.reasons
    assert abs(result.cd125_pos_fraction - base.cd125_pos_fraction) <= 0.01


def test_bits_scale_the_data_and_range(tmp_path):
    from cd125gate.io.fcs import read_fcs

    truth = write_case(tmp_path, replace(CASE, n_events=2000, bits=20, name="bits"), seed=5)
    fcs = read_fcs(tmp_path / truth["files"]["stained"])
    ranges = {c.name: c.range for c in fcs.channels}
    assert ranges["FSC-A"] == ranges["PE-A"] == 2 ** 20
    assert fcs.events[:, fcs.channel_names().index("SSC-A")].max() > 262_144
