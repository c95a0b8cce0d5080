"""The FCS reader against real files from other projects and against crafted defects."""

import hashlib
import os
import tracemalloc
import warnings

import numpy as np
import pytest

from cd125gate.errors import InputError
from cd125gate.io import fcs_events
from cd125gate.io.fcs import read_fcs
from conftest import SHARED_CORPUS, TEST_CORPUS, build_fcs

# Corrupt by design (see ../shared/corpus/MANIFEST.md): every reader must refuse them.
REFUSED = {
    "fcsparser/corrupted/corrupted.fcs": "too short",
    "fcsparser/cytek-nl-2000/sample_header.fcs": "truncated",
    "flowkit/noncompliant/data_start_offset_discrepancy_example.fcs": "disagree",
    "flowkit/noncompliant/data_stop_offset_discrepancy_example.fcs": "disagree",
}


def fcs_files(folder):
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".fcs", ".lmd"))


def relative(path, folder):
    return path.relative_to(folder).as_posix()


def peer_flowkit(path):
    """FlowKit's preprocessed ("raw") events, or None where FlowKit cannot read the file."""
    import flowkit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return flowkit.Sample(str(path), ignore_offset_error=True).get_events(source="raw")
    except Exception:
        return None


def peer_flowio(path):
    """flowio's first data set (it also reads multi-data-set files), or None."""
    import flowio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return flowio.read_multiple_data_sets(str(path), ignore_offset_error=True)[0].as_array()
    except Exception:
        return None


def peer_fcsparser(path):
    """fcsparser 0.2.4's unpreprocessed events, or None (it fails on byte-swapped data on numpy 2)."""
    import fcsparser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, frame = fcsparser.parse(str(path), reformat_meta=False, channel_naming="$PnN")
        return frame.to_numpy(dtype=np.float64)
    except Exception:
        return None


def untouched_channels(fcs):
    """Indices of channels our preprocessing leaves as stored (fcsparser does no preprocessing)."""
    keep = []
    for i, channel in enumerate(fcs.channels):
        scaled_time = channel.name.lower() == "time" and fcs.timestep not in (None, 1.0)
        log = channel.amplification[0] > 0 and fcs.datatype == "I"
        gained = channel.name.lower() != "time" and channel.gain not in (None, 0.0, 1.0)
        if not (scaled_time or log or gained):
            keep.append(i)
    return keep


def check_corpus_file(path, folder):
    """Refused if MANIFEST says corrupt, otherwise read and equal to every peer that reads it."""
    name = relative(path, folder)
    if name in REFUSED:
        with pytest.raises(InputError) as caught:
            read_fcs(path)
        assert caught.value.source == str(path)
        assert REFUSED[name] in caught.value.problem
        return None
    fcs = read_fcs(path)
    assert fcs.events.shape == (fcs.event_count, len(fcs.channels))
    assert fcs.events.dtype == np.float64
    assert fcs.event_count > 0
    compared = []
    for peer in (peer_flowkit, peer_flowio):
        expected = peer(path)
        if expected is not None:
            assert np.array_equal(fcs.events, expected), f"{peer.__name__} differs on {name}"
            compared.append(peer.__name__)
    stored = peer_fcsparser(path)
    if stored is not None:
        keep = untouched_channels(fcs)
        assert np.array_equal(fcs.events[:, keep], stored[:, keep]), f"fcsparser differs on {name}"
        compared.append("fcsparser")
    return compared


@pytest.mark.parametrize("path", fcs_files(TEST_CORPUS), ids=lambda p: relative(p, TEST_CORPUS))
def test_test_corpus_read_or_refused(path):
    check_corpus_file(path, TEST_CORPUS)


@pytest.mark.parametrize("path", fcs_files(SHARED_CORPUS) or [None], ids=lambda p: p and relative(p, SHARED_CORPUS))
def test_shared_corpus_read_or_refused(path):
    if path is None:
        pytest.skip("../shared/corpus is not present")
    check_corpus_file(path, SHARED_CORPUS)


def test_shared_corpus_peers_cover_most_files(shared_corpus):
    # Every readable file except the Cytek xP5 (24-bit) and blank-offset files is
    # checked against FlowKit or flowio, so agreement is not vacuous.
    unchecked = []
    for path in fcs_files(shared_corpus):
        if relative(path, shared_corpus) not in REFUSED and not check_corpus_file(path, shared_corpus):
            unchecked.append(path.name)
    assert sorted(unchecked) == ["Cytek_xP5.fcs", "fake_large_fcs.fcs"]


def test_blank_header_offsets_read_like_the_original(shared_corpus):
    fake = read_fcs(shared_corpus / "fcsparser/fake_large_fcs/fake_large_fcs.fcs")
    original = read_fcs(shared_corpus / "fcsparser/Fortessa/FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs")
    assert np.array_equal(fake.events, original.events)


# --- quirks, on the always-present copies --------------------------------------------------------

def test_blank_header_offsets_use_text_offsets(tmp_path):
    source = TEST_CORPUS / "fcsparser/fake_large_fcs/fake_large_fcs.fcs"
    fcs = read_fcs(source)
    assert fcs.event_count == 11585 and fcs.spillover.keyword == "SPILL"
    # Fill the HEADER offsets in from TEXT; FlowKit reads that file, and must see the same events.
    raw = bytearray(source.read_bytes())
    raw[26:42] = f"{int(fcs.keywords['$BEGINDATA']):>8}{int(fcs.keywords['$ENDDATA']):>8}".encode()
    repaired = tmp_path / "repaired.fcs"
    repaired.write_bytes(bytes(raw))
    assert np.array_equal(fcs.events, peer_flowkit(repaired))


def test_cytek_24_bit_channels_match_bytewise_decoding():
    path = TEST_CORPUS / "fcsparser/Cytek_xP5/Cytek_xP5.fcs"
    fcs = read_fcs(path)
    assert [c.bits for c in fcs.channels] == [24] * 8 and fcs.byte_order == "big"
    start = int(fcs.keywords["$BEGINDATA"])
    raw = path.read_bytes()[start:start + fcs.event_count * 8 * 3]
    stored = np.array([int.from_bytes(raw[i:i + 3], "big") for i in range(0, len(raw), 3)], dtype=np.float64)
    stored = stored.reshape(fcs.event_count, 8)
    # Time: $PnR 30000 -> 15-bit mask, then x $TIMESTEP; FL channels: 10-bit mask then 10**(4 x / 1024).
    assert np.array_equal(fcs.column("TIME"), (stored[:, 0].astype(np.int64) % 32768) * 0.001)
    assert np.array_equal(fcs.events[:, 1:3], stored[:, 1:3].astype(np.int64) % 1024)
    expected_fl1 = 10 ** (4.0 * (stored[:, 3].astype(np.int64) % 1024) / 1024.0) * 1.0
    assert np.array_equal(fcs.column("FL1"), expected_fl1)


def test_miltenyi_one_byte_long_data_and_escaped_delimiter():
    fcs = read_fcs(TEST_CORPUS / "fcsparser/MiltenyiBiotec/FCS3.1/SG_2014-09-26_Duplicate_Names.fcs")
    assert any("one byte past" in w for w in fcs.warnings)
    assert [c.stain for c in fcs.channels[-2:]] == ["GFP/FITC-A", "GFP/FITC-H"]
    assert fcs.version == "FCS3.1" and fcs.byte_order == "little"


def test_cellquest_latin1_text_and_log_channels():
    fcs = read_fcs(TEST_CORPUS / "flowkit/gate_ref/data1.fcs")
    assert any("not valid UTF-8" in w for w in fcs.warnings)
    assert fcs.keywords["CREATOR"] == "CELLQuest\u00aa 3.3"
    assert fcs.version == "FCS2.0" and fcs.cytometer == "FACSCalibur"
    fl1 = fcs.channels[2]
    assert fl1.name == "FL1-H" and fl1.stain == "CD4 FITC" and fl1.amplification == (4.0, 1.0)
    assert fcs.column("FL1-H").min() >= 1.0 and fcs.column("FL1-H").max() <= 1e4


def test_cyflow_padded_text_and_mixed_widths():
    fcs = read_fcs(TEST_CORPUS / "fcsparser/cyflow_cube_8/cyflow_cube_8.fcs")
    assert sorted({c.bits for c in fcs.channels}) == [8, 16, 32]
    assert fcs.keywords["$TOT"] == "725"
    assert not any("odd number" in w for w in fcs.warnings)


def test_multi_dataset_reads_first_and_counts():
    fcs = read_fcs(TEST_CORPUS / "flowkit/multi_dataset_fcs/coulter.lmd")
    assert fcs.dataset_count == 2
    assert any("2 data sets" in w for w in fcs.warnings)
    assert np.array_equal(fcs.events, peer_flowio(TEST_CORPUS / "flowkit/multi_dataset_fcs/coulter.lmd"))


def test_spillover_parsed_from_spill_keyword():
    fcs = read_fcs(TEST_CORPUS / "flowkit/index_sorted/index_sorted_example.fcs")
    spill = fcs.spillover
    n = len(spill.channels)
    assert spill.matrix.shape == (n, n) and spill.matrix.dtype == np.float64
    assert np.array_equal(np.diag(spill.matrix), np.ones(n))
    assert set(spill.channels) <= set(fcs.channel_names())
    values = fcs.keywords["SPILL"].split(",")
    assert spill.matrix[0, 1] == float(values[1 + n + 1])


def test_noncompliant_refusal_names_both_offsets():
    path = TEST_CORPUS / "flowkit/noncompliant/data_start_offset_discrepancy_example.fcs"
    with pytest.raises(InputError, match=r"HEADER bytes 5555-6188.*TEXT .*6081-6188"):
        read_fcs(path)


def test_input_files_are_not_modified():
    for path in fcs_files(TEST_CORPUS):
        before = (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
        try:
            fcs = read_fcs(path)
            assert fcs.sha256 == before[0]
        except InputError:
            pass
        assert (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns) == before


# --- crafted files -------------------------------------------------------------------------------

def test_float_round_trip_little_and_big_endian(make_fcs):
    values = np.random.default_rng(1).normal(1000, 300, size=(500, 3)).astype(np.float32)
    for byteorder, expected in (("1,2,3,4", "little"), ("4,3,2,1", "big")):
        fcs = read_fcs(make_fcs(values, byteorder=byteorder))
        assert fcs.byte_order == expected
        assert np.array_equal(fcs.events, values.astype(np.float64))
    doubles = read_fcs(make_fcs(values.astype(np.float64) / 3, datatype="D"))
    assert np.array_equal(doubles.events, values.astype(np.float64) / 3)


def test_truncated_data_segment_is_refused(make_fcs):
    path = make_fcs(np.ones((100, 2)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated") as caught:
        read_fcs(path)
    assert caught.value.source == str(path)


def test_huge_event_count_is_refused_without_allocating(make_fcs):
    path = make_fcs(np.ones((10, 2)), keywords={"$TOT": str(10**12)})
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="truncated"):
            read_fcs(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_data_longer_than_events_is_refused(make_fcs):
    path = make_fcs(np.ones((10, 2)), keywords={"$TOT": "8"})
    with pytest.raises(InputError, match="do not match"):
        read_fcs(path)


def test_two_bytes_long_data_segment_is_refused(make_fcs):
    with pytest.raises(InputError, match="holds 82 bytes but .* describe 80"):
        read_fcs(make_fcs(np.ones((10, 2)), data_end_extra=2))


def test_one_byte_long_data_segment_reads_with_warning(make_fcs):
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    fcs = read_fcs(make_fcs(values, data_end_extra=1))
    assert np.array_equal(fcs.events, values)
    assert any("one byte past" in w for w in fcs.warnings)


def test_blank_header_offsets_crafted(make_fcs):
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    path = make_fcs(values, blank_header_data=True)
    assert path.read_bytes()[26:42] == b" " * 16
    assert np.array_equal(read_fcs(path).events, values)


def test_header_text_disagreement_is_refused(make_fcs):
    path = make_fcs(np.ones((10, 2)))
    raw = bytearray(path.read_bytes())
    raw[26:34] = f"{int(raw[26:34]) - 8:>8}".encode()
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="disagree"):
        read_fcs(path)


def test_big_endian_16_bit_integers_are_masked_by_range(make_fcs):
    stored = np.array([[5, 1023], [1024 + 7, 0xF000 | 300], [65535, 2]])
    fcs = read_fcs(make_fcs(stored, datatype="I", byteorder="4,3,2,1", bits=[16, 16], ranges=[1024, 1000]))
    # $PnR 1024 and 1000 both mean a 10-bit range: higher bits are flags, not signal.
    assert np.array_equal(fcs.events, stored % 1024)


def test_tubes_longer_than_a_decoding_block_are_decoded_whole(make_fcs):
    # Decoded a block of rows at a time: the last, partial block and the masks included.
    rows = 2 * fcs_events.DECODE_BLOCK + 123
    stored = np.stack([np.arange(rows) % 65536, (np.arange(rows) * 7919) % 65536], axis=1)
    fcs = read_fcs(make_fcs(stored, datatype="I", bits=[16, 16], ranges=[65536, 1024]))
    assert fcs.events.flags.f_contiguous
    assert np.array_equal(fcs.events, stored % [65536, 1024])
    assert fcs.over_range["FL2-A"] == np.mean(stored[:, 1] >= 1024)


def test_odd_and_mixed_integer_widths(make_fcs):
    stored = np.array([[1, 70000, 3, 2**40 + 5], [255, 2**24 - 1, 65535, 9]])
    ranges = [256, 2**24, 65536, 2**48]
    for byteorder in ("1,2,3,4", "4,3,2,1"):
        fcs = read_fcs(make_fcs(stored, datatype="I", byteorder=byteorder, bits=[8, 24, 16, 48], ranges=ranges))
        assert np.array_equal(fcs.events, stored)


def test_log_amplified_integer_channel(make_fcs):
    stored = np.array([[0, 0], [512, 512], [1023, 1023]])
    fcs = read_fcs(make_fcs(stored, datatype="I", keywords={"$P2E": "4,0.5", "$P2G": "2"}))
    assert fcs.channels[1].amplification == (4.0, 0.5)
    assert np.array_equal(fcs.column("FL2-A"), 10 ** (4 * stored[:, 1] / 1024) * 0.5 / 2)
    assert np.array_equal(fcs.column("FL1-A"), stored[:, 0])


def test_log_zero_offset_reads_as_one(make_fcs):
    fcs = read_fcs(make_fcs(np.array([[0], [1024]]), datatype="I", bits=[16], ranges=[2048],
                            keywords={"$P1E": "4,0"}))
    assert np.array_equal(fcs.events[:, 0], [1.0, 100.0])


def test_log_amplification_on_float_data_is_ignored_with_warning(make_fcs):
    values = np.array([[10.0], [20.0]], dtype=np.float32)
    path = make_fcs(values, keywords={"$P1E": "4,1"})
    fcs = read_fcs(path)
    assert np.array_equal(fcs.events, values)
    assert any("ignored for float data" in w for w in fcs.warnings)
    assert any("ignored for float data" in w for w in read_fcs(path, read_events=False).warnings)


def test_time_channel_scaled_by_timestep_without_gain(make_fcs):
    stored = np.array([[100.0, 8.0], [200.0, 8.0]], dtype=np.float32)
    fcs = read_fcs(make_fcs(stored, names=["Time", "FSC-A"],
                            keywords={"$TIMESTEP": "0.01", "$P1G": "0.01", "$P2G": "4"}))
    assert fcs.timestep == 0.01
    assert np.array_equal(fcs.column("Time"), [1.0, 2.0])
    assert np.array_equal(fcs.column("FSC-A"), [2.0, 2.0])


def test_duplicate_names_made_unique(make_fcs):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    fcs = read_fcs(make_fcs(values, names=["FL1-A", "FL1-A", "FL1-A"], keywords={"$P2S": " CD125 PE "}))
    assert fcs.channel_names() == ["FL1-A", "FL1-A_2", "FL1-A_3"]
    assert fcs.channels[1].stain == "CD125 PE" and fcs.channels[0].stain is None
    assert np.array_equal(fcs.column("FL1-A_2"), values[:, 1])
    assert sum("repeats" in w for w in fcs.warnings) == 2


def test_non_utf8_text_is_decoded_with_warning(tmp_path):
    raw = build_fcs(np.ones((2, 1), dtype=np.float32), keywords={"$OP": "Ren\u00e9e"})
    path = tmp_path / "latin1.fcs"
    path.write_bytes(raw)  # build_fcs encodes TEXT as Latin-1, so é is the single byte 0xE9
    fcs = read_fcs(path)
    assert fcs.keywords["$OP"] == "Ren\u00e9e"
    assert any("not valid UTF-8" in w for w in fcs.warnings)


def test_escaped_delimiter_and_other_delimiter(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((2, 1)), delimiter="\\", keywords={"$P1S": "CD3\\CD19", "$FIL": "a/b"}))
    assert fcs.channels[0].stain == "CD3\\CD19" and fcs.keywords["$FIL"] == "a/b"


def test_spillover_vendor_spellings(make_fcs):
    for keyword in ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER"):
        fcs = read_fcs(make_fcs(np.ones((2, 2)), keywords={keyword: "2,FL2-A,FL1-A,1,0.1,0.2,1"}))
        assert fcs.spillover.keyword == keyword
        assert fcs.spillover.channels == ("FL2-A", "FL1-A")
        assert np.array_equal(fcs.spillover.matrix, [[1, 0.1], [0.2, 1]])


def test_incomplete_spillover_is_ignored_with_warning(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((2, 2)), keywords={"$SPILLOVER": "2,FL1-A,FL2-A"}))
    assert fcs.spillover is None
    assert any("$SPILLOVER is incomplete" in w for w in fcs.warnings)


def test_fcs32_per_channel_datatype(make_fcs):
    # FCS 3.2 lets $PnDATATYPE override $DATATYPE: here two 32-bit floats and one 16-bit integer.
    stored = np.array([[1.5, 2.5, 7], [3.25, -4.0, 1000]])
    log = {"$P1E": "4,1", "$P3E": "2,1", "$P3R": "1024"}  # only the integer channel is anti-logged
    raw = np.zeros(2, dtype=[("a", "<f4"), ("b", "<f4"), ("c", "<u2")])
    raw["a"], raw["b"], raw["c"] = stored[:, 0], stored[:, 1], stored[:, 2]
    path = make_fcs(np.zeros((2, 3)), version="FCS3.2", datatype="I", bits=[32, 32, 16],
                    keywords={"$P1DATATYPE": "F", "$P2DATATYPE": "F", **log})
    data = path.read_bytes()
    path.write_bytes(data[:-len(raw.tobytes())] + raw.tobytes())
    fcs = read_fcs(path)
    assert fcs.version == "FCS3.2"
    assert np.array_equal(fcs.events[:, :2], stored[:, :2])
    assert np.array_equal(fcs.events[:, 2], 10 ** (2 * stored[:, 2] / 1024))


def test_nextdata_chain_counts_data_sets(tmp_path):
    first = build_fcs(np.ones((3, 1)), keywords={"$NEXTDATA": "00000000"})
    first = first.replace(b"/$NEXTDATA/00000000/", f"/$NEXTDATA/{len(first):08d}/".encode())
    path = tmp_path / "two.fcs"
    path.write_bytes(first + build_fcs(np.zeros((5, 1))))
    fcs = read_fcs(path)
    assert fcs.dataset_count == 2 and fcs.event_count == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: b"NOTFCS" + raw[6:], "not an FCS file"),
    (lambda raw: b"FCS4.0" + raw[6:], "not supported"),
    (lambda raw: raw[:10] + b"     abc" + raw[18:], "not a number"),
    (lambda raw: raw.replace(b"/$DATATYPE/F/", b"/$DATATYPE/A/"), "$DATATYPE 'A'"),
    (lambda raw: raw.replace(b"/$BYTEORD/1,2,3,4/", b"/$BYTEORD/3,4,1,2/"), "$BYTEORD"),
    (lambda raw: raw.replace(b"/$MODE/L/", b"/$MODE/C/"), "$MODE"),
    (lambda raw: raw.replace(b"/$P1N/", b"/$Q1N/"), "$P1N is missing"),
    (lambda raw: raw.replace(b"/$TOT/4/", b"/$TOT/x/"), "$TOT is not a whole number"),
    (lambda raw: raw[:40], "too short"),
    (lambda raw: raw[:200], "TEXT segment ends"),
])
def test_corrupt_files_give_one_line_errors(tmp_path, mutate, message):
    path = tmp_path / "bad.fcs"
    path.write_bytes(mutate(build_fcs(np.ones((4, 2), dtype=np.float32))))
    with pytest.raises(InputError) as caught:
        read_fcs(path)
    assert message in caught.value.problem
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="cannot read file"):
        read_fcs(tmp_path / "absent.fcs")
    with pytest.raises(InputError, match="cannot read file"):
        read_fcs(tmp_path)


def test_read_events_false_checks_structure_only(make_fcs):
    path = make_fcs(np.ones((10, 2)))
    fcs = read_fcs(path, read_events=False)
    assert fcs.events is None and fcs.event_count == 10
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(InputError, match="truncated"):
        read_fcs(path, read_events=False)


def test_column_of_unknown_channel_names_the_file(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((2, 2))))
    with pytest.raises(InputError, match="no channel named 'CD125'"):
        fcs.column("CD125")


def test_million_big_endian_events_read_exactly(tmp_path):
    # Speed is measured by scripts/bench.py, not asserted here.
    values = np.random.default_rng(2).uniform(0, 262144, size=(1_000_000, 13)).astype(np.float32)
    path = tmp_path / "big.fcs"
    path.write_bytes(build_fcs(values, byteorder="4,3,2,1", names=[f"C{i}" for i in range(13)]))
    assert np.array_equal(read_fcs(path).events, values.astype(np.float64))


# --- Hostile input (issue 13): each a small reproducer of a class the fuzzer found. ---

def _one_line_refusal(path, match, **options):
    with pytest.raises(InputError) as caught:
        read_fcs(path, **options)
    assert match in caught.value.problem, caught.value.problem
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{path}: ")
    return caught.value.problem


@pytest.mark.parametrize("keywords, match", [
    ({"$P1B": "1\u00b2"}, "$P1B='1\u00b2'"),                     # superscript two: isdigit() but not int()
    ({"$TOT": "\u00b2"}, "$TOT is not a whole number"),
    ({"$PAR": "\u00b2"}, "$PAR is not a whole number"),
    ({"$P1R": "inf"}, "$P1R is not a finite number"),
    ({"$P2R": "nan"}, "$P2R is not a finite number"),
    ({"$P1R": "1e999"}, "$P1R is not a finite number"),
    ({"$P1R": "0"}, "must be positive"),
    ({"$P1G": "nan"}, "$P1G is not a finite number"),
    ({"$P1E": "inf,1"}, "$P1E is not 'decades,offset'"),
    ({"$P1E": "1"}, "$P1E is not 'decades,offset'"),
])
def test_bad_numeric_keywords_on_integer_data_are_one_line_refusals(make_fcs, keywords, match):
    path = make_fcs(np.full((4, 2), 7), datatype="I", keywords=keywords)
    _one_line_refusal(path, match)


def test_superscript_nextdata_is_a_warning_not_a_traceback(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((3, 2)), keywords={"$NEXTDATA": "\u00b9\u00b2"}))
    assert fcs.dataset_count == 1 and any("$NEXTDATA is not a whole number" in w for w in fcs.warnings)


def test_non_finite_timestep_leaves_time_unscaled(make_fcs):
    fcs = read_fcs(make_fcs(np.array([[1.0, 5.0], [2.0, 5.0]]), names=["Time", "FSC-A"],
                            keywords={"$TIMESTEP": "nan"}))
    assert fcs.timestep is None and np.array_equal(fcs.column("Time"), [1.0, 2.0])


def test_non_finite_spillover_is_ignored_with_warning(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((2, 2)), keywords={"$SPILLOVER": "2,FL1-A,FL2-A,1,nan,0,1"}))
    assert fcs.spillover is None and any("not finite" in w for w in fcs.warnings)


def test_zero_events_with_mixed_widths_decodes_to_an_empty_array(make_fcs):
    fcs = read_fcs(make_fcs(np.zeros((0, 3)), datatype="I", bits=[8, 16, 24]))
    assert fcs.events.shape == (0, 3)


def test_tot_zero_with_events_in_data_is_refused(tmp_path):
    raw = build_fcs(np.arange(40).reshape(10, 4), datatype="I", bits=[8, 16, 16, 32])
    path = tmp_path / "tot0.fcs"
    path.write_bytes(raw.replace(b"/$TOT/10/", b"/$TOT/0/"))
    _one_line_refusal(path, "$TOT is 0 but the DATA segment holds 90 bytes (10 events of 9 bytes)")


def test_non_regular_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.fcs"
    os.mkfifo(fifo)
    # Opening a FIFO for reading would block until a writer appears: refused before opening.
    assert "FIFO" in _one_line_refusal(fifo, "not a regular file")
    _one_line_refusal("/dev/zero", "character device")
    _one_line_refusal(tmp_path, "it is a folder")


def test_file_above_the_size_limit_is_refused_before_reading(make_fcs, monkeypatch):
    path = make_fcs(np.ones((100, 2)))
    size = path.stat().st_size
    assert read_fcs(path, max_bytes=size).event_count == 100
    assert "more than the" in _one_line_refusal(path, f"file is {size:,} bytes", max_bytes=size - 1)
    monkeypatch.setenv("CD125GATE_MAX_FCS_BYTES", str(size - 1))
    _one_line_refusal(path, "byte limit")
    monkeypatch.setenv("CD125GATE_MAX_FCS_BYTES", "lots")
    with pytest.raises(InputError, match="CD125GATE_MAX_FCS_BYTES: must be a positive whole number"):
        read_fcs(path)


def test_many_duplicate_names_and_escaped_delimiters_parse_in_linear_time(tmp_path):
    import time

    n_channels = 50_000
    raw = build_fcs(np.zeros((1, n_channels), dtype=np.float32), names=["FL1-A"] * n_channels,
                    keywords={"NOTE": "a/" * 1_000_000})
    path = tmp_path / "hostile.fcs"
    path.write_bytes(raw)
    # CPU time, not wall time: the bound is about the algorithm (quadratic splitting took
    # 30 s, quadratic renaming 20 s), and a shared test machine's load only stretches wall time.
    start = time.process_time()
    fcs = read_fcs(path)
    elapsed = time.process_time() - start
    assert fcs.keywords["NOTE"] == "a/" * 1_000_000
    assert fcs.channel_names()[:3] == ["FL1-A", "FL1-A_2", "FL1-A_3"]
    assert len(set(fcs.channel_names())) == n_channels
    # 5 renaming warnings and a count of the rest, not 49,999 lines.
    assert fcs.warnings[-1] == f"... and {n_channels - 1 - 5} more like these"
    # About 0.6 s alone; a quadratic step would take 20-30 s. The margin absorbs a loaded CI machine.
    assert elapsed < 3.0, f"{elapsed:.2f} s"


def test_renaming_skips_names_already_taken(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((1, 4)), names=["A", "A_2", "A", "A"]))
    assert fcs.channel_names() == ["A", "A_2", "A_3", "A_4"]


def test_huge_par_is_refused_at_once(make_fcs):
    # A fuzzer mutant: $PAR of 10**80 made the reader build per-channel lists forever. (10**80
    # itself is now refused for its length; 20 digits is the most a plausible number has.)
    path = make_fcs(np.ones((3, 2)), keywords={"$PAR": "13" * 10})
    _one_line_refusal(path, f"$PAR is {'13' * 10} but TEXT holds only")


def test_decoded_size_is_bounded_by_the_limit_too(make_fcs):
    # 8-bit integers grow eightfold as float64: a file under the limit can still exhaust memory.
    path = make_fcs(np.ones((1000, 4)), datatype="I", bits=[8] * 4)
    size = path.stat().st_size
    assert read_fcs(path, read_events=False, max_bytes=size).event_count == 1000
    _one_line_refusal(path, "decoding 1,000 events x 4 channels would take 32,000 bytes", max_bytes=size)
    assert read_fcs(path, max_bytes=8000).events.shape == (1000, 4)


# --- Absurdly long numbers: int() of over 4,300 digits raised Python's ValueError (a traceback). ---

FIVE_THOUSAND = "9" * 5000


def with_text_value(raw, key, value):
    """``raw`` (from build_fcs, blank HEADER DATA offsets) with TEXT ``key`` set to ``value``; the
    HEADER's TEXT end follows the new length. For $BEGINDATA/$ENDDATA, which build_fcs writes itself."""
    needle = f"/{key}/".encode()
    start = raw.index(needle) + len(needle)
    end = raw.index(b"/", start)
    changed = raw[:start] + value.encode() + raw[end:]
    text_end = int(raw[18:26]) + len(changed) - len(raw)
    return changed[:18] + b"%8d" % text_end + changed[26:]


@pytest.mark.parametrize("key, datatype, what", [
    ("$PAR", "I", "channel count"),
    ("$TOT", "I", "event count"),
    ("$BEGINDATA", "F", "byte offset"),
    ("$ENDDATA", "F", "byte offset"),
    ("$P1B", "I", "bit width"),
    ("$P2B", "F", "bit width"),      # float data read $PnB only to warn; still refused
])
def test_absurdly_long_whole_numbers_are_one_line_refusals(tmp_path, capsys, key, datatype, what):
    from cd125gate.cli import main

    raw = build_fcs(np.full((4, 2), 7), datatype=datatype, blank_header_data=True)
    path = tmp_path / "digits.fcs"
    path.write_bytes(with_text_value(raw, key, FIVE_THOUSAND))
    message = f"{key} is not a plausible {what} (5,000 digits)"
    assert _one_line_refusal(path, message) == message
    assert main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err == f"cd125gate: {path}: {message}\n"


def test_a_long_count_is_refused_before_arithmetic_makes_it_unprintable(make_fcs):
    # 4,300 digits convert, but $TOT x bytes per event has 4,301 and raised when put in a message.
    _one_line_refusal(make_fcs(np.ones((4, 2)), keywords={"$TOT": "9" * 4300}),
                      "$TOT is not a plausible event count (4,300 digits)")
    _one_line_refusal(make_fcs(np.ones((4, 2)), keywords={"$TOT": "1" + "0" * 20}),
                      "$TOT is not a plausible event count (21 digits)")
    _one_line_refusal(make_fcs(np.ones((4, 2)), keywords={"$TOT": "-" + FIVE_THOUSAND}),
                      "$TOT is not a plausible event count (5,000 digits)")


def test_leading_zeros_do_not_count_as_digits(make_fcs):
    fcs = read_fcs(make_fcs(np.ones((4, 2)), datatype="I",
                            keywords={"$TOT": "0" * 5000 + "4", "$PAR": "0" * 5000 + "2", "$P1B": "0" * 5000 + "16"}))
    assert fcs.event_count == 4 and len(fcs.channels) == 2 and fcs.channels[0].bits == 16


def test_absurdly_long_nextdata_is_a_warning(make_fcs):
    # Only the first data set is read: a damaged pointer to the next one is not fatal.
    fcs = read_fcs(make_fcs(np.ones((3, 2)), keywords={"$NEXTDATA": FIVE_THOUSAND}))
    assert fcs.dataset_count == 1
    assert "$NEXTDATA is not a plausible byte offset (5,000 digits); ignored" in fcs.warnings


@pytest.mark.parametrize("count", [FIVE_THOUSAND, "9" * 4000])
def test_absurdly_long_spillover_count_is_ignored_with_warning(make_fcs, count):
    # 4,000 digits converted, then n * n (8,000 digits) raised in the warning's text.
    fcs = read_fcs(make_fcs(np.ones((2, 2)), keywords={"$SPILLOVER": f"{count},FL1-A,FL2-A,1,0,0,1"}))
    assert fcs.spillover is None
    assert "$SPILLOVER is not a spillover matrix ('n,names,values'); ignored" in fcs.warnings


def test_absurdly_long_size_limit_variable_is_one_line(make_fcs, monkeypatch):
    monkeypatch.setenv("CD125GATE_MAX_FCS_BYTES", FIVE_THOUSAND)
    with pytest.raises(InputError, match=r"must be a positive whole number of bytes, not '9+' \(5,000 digits\)$"):
        read_fcs(make_fcs(np.ones((2, 2))))
