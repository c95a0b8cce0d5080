"""The FCS writer: files that flowio, FlowKit and fcsparser read back unchanged."""

import flowio
import flowkit
import numpy as np
import pytest

from cd125gate.io.fcs_write import _header, fcs_bytes, format_spillover, write_fcs

CHANNELS = ["FSC-A", "FITC-A", "PE-A", "Time"]
SPILL = np.array([[1.0, 0.2], [0.013, 1.0]])


@pytest.fixture
def events():
    rng = np.random.default_rng(7)
    return rng.normal(1000, 300, (300, len(CHANNELS))).astype(np.float32)


def write(path, events, **kw):
    kw = {"stains": [None, "CD34", "CD125", None], "spillover": SPILL,
          "spill_channels": ["FITC-A", "PE-A"], "keywords": {"$TIMESTEP": "0.01"}, **kw}
    write_fcs(path, events, CHANNELS, **kw)
    return path


def read_events(path):
    flow = flowio.FlowData(str(path))
    return flow, np.reshape(np.asarray(flow.events, dtype=np.float32), (-1, flow.channel_count))


def test_flowio_round_trip_fcs31_little_endian(tmp_path, events):
    flow, back = read_events(write(tmp_path / "a.fcs", events))
    assert flow.header["version"] == "3.1"
    assert flow.text["byteord"] == "1,2,3,4"
    assert np.array_equal(back, events)
    assert flow.pnn_labels == CHANNELS
    assert flow.text["p2s"] == "CD34" and "p1s" not in flow.text  # no empty $PnS
    assert flow.text["spillover"] == "2,FITC-A,PE-A,1.0,0.2,0.013,1.0"
    assert int(flow.text["tot"]) == len(events) and int(flow.text["par"]) == 4
    assert all(flow.text[f"p{i}e"] == "0,0" and flow.text[f"p{i}b"] == "32" for i in range(1, 5))


def test_diva_style_big_endian_fcs30_with_spill(tmp_path, events):
    path = write(tmp_path / "d.fcs", events, version="3.0", byte_order="big", spill_keyword="SPILL")
    raw = path.read_bytes()
    flow, back = read_events(path)
    assert raw[:6] == b"FCS3.0"
    assert flow.text["byteord"] == "4,3,2,1"
    assert "spill" in flow.text and "spillover" not in flow.text
    begin, end = int(flow.text["begindata"]), int(flow.text["enddata"])
    assert raw[begin:end + 1] == events.astype(">f4").tobytes()
    assert np.array_equal(back, events)


@pytest.mark.parametrize("order,keyword", [("little", "$SPILLOVER"), ("big", "SPILL")])
def test_flowkit_reads_events_and_applies_the_spillover(tmp_path, events, order, keyword):
    path = write(tmp_path / "k.fcs", events, byte_order=order, spill_keyword=keyword)
    sample = flowkit.Sample(str(path))
    assert sample.channels.pnn.tolist() == CHANNELS
    raw = sample.get_events(source="raw")
    assert np.array_equal(raw[:, :3], events[:, :3])
    # FlowKit scales Time by $TIMESTEP.
    assert np.allclose(raw[:, 3], events[:, 3] * 0.01, rtol=1e-6)
    sample.apply_compensation(sample.metadata[keyword.lstrip("$").lower()])
    assert np.array_equal(sample.compensation.matrix, SPILL)
    assert sample.compensation.detectors == ["FITC-A", "PE-A"]
    comp = sample.get_events(source="comp")[:, 1:3]
    assert np.allclose(comp, events[:, 1:3].astype(float) @ np.linalg.inv(SPILL), rtol=1e-5)


def test_fcsparser_reads_the_little_endian_file(tmp_path, events):
    fcsparser = pytest.importorskip("fcsparser")
    meta, data = fcsparser.parse(str(write(tmp_path / "p.fcs", events)), reformat_meta=True)
    assert list(data.columns) == CHANNELS
    assert np.array_equal(data.to_numpy(dtype=np.float32), events)


def test_offsets_in_header_and_text_agree_and_end_the_file(tmp_path, events):
    raw = write(tmp_path / "o.fcs", events).read_bytes()
    text_begin, text_end, data_begin, data_end = (int(raw[10 + 8 * i:18 + 8 * i]) for i in range(4))
    text = raw[text_begin:text_end + 1].decode()
    assert text[0] == text[-1] == "/"
    assert f"/$BEGINDATA/{data_begin}/" in text and f"/$ENDDATA/{data_end}/" in text
    assert data_begin == text_end + 1 and data_end == len(raw) - 1
    assert data_end - data_begin + 1 == events.nbytes


def test_delimiter_inside_values_is_escaped(tmp_path, events):
    path = write(tmp_path / "e.fcs", events, keywords={"$SRC": "patient 1/2", "$TIMESTEP": "0.01"},
                 stains=[None, "CD34/FITC", "CD125", None])
    flow, back = read_events(path)
    assert flow.text["src"] == "patient 1/2"
    assert flow.text["p2s"] == "CD34/FITC"
    assert np.array_equal(back, events)


def test_large_data_offsets_are_zero_in_header():
    header = _header("3.1", 58, 1000, 1001, 100_000_500)
    assert header[:6] == b"FCS3.1" and len(header) == 58
    assert [int(header[10 + 8 * i:18 + 8 * i]) for i in range(4)] == [58, 1000, 0, 0]


def test_wrong_shapes_are_refused(events):
    with pytest.raises(ValueError, match="channels"):
        fcs_bytes(events[:, :3], CHANNELS)
    with pytest.raises(ValueError, match="shape"):
        format_spillover(np.eye(3), ["A", "B"])
    with pytest.raises(ValueError, match="byte_order"):
        fcs_bytes(events, CHANNELS, byte_order="middle")


def test_written_atomically_without_leftovers(tmp_path, events):
    write(tmp_path / "sub" / "x.fcs", events)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.fcs"]
