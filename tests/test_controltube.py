"""The control tube as read: one type whether it was read, refused by the reader, or not given."""

from pathlib import Path

import pytest

from cd125gate.analysis import controltube, panel
from cd125gate.errors import InputError
from cd125gate.io.fcs import read_fcs
from cd125gate.settings import load_settings

TEST_DATA = Path(__file__).parents[1] / "test_data"
PANEL = load_settings().panel


def test_no_control_is_an_empty_read_and_no_problem():
    read = controltube.read(None)
    assert read == controltube.ControlRead(None, None)
    assert controltube.usable(read, None, {}, PANEL) == (None, None)


def test_a_file_the_reader_refuses_is_a_problem_naming_it():
    path = TEST_DATA / "corrupt_stained.fcs"
    read = controltube.read(path)
    assert read.fcs is None and read.problem.startswith(str(path))
    assert controltube.usable(read, path, {}, PANEL) == (None, read.problem)


def test_a_readable_control_with_the_stained_tubes_channels_is_used():
    stained = read_fcs(TEST_DATA / "high_fmo_stained.fcs")
    path = TEST_DATA / "high_fmo_control.fcs"
    read = controltube.read(path)
    markers = panel.resolve_markers(stained.channels, PANEL, stained.path)
    fcs, problem = controltube.usable(read, path, markers, PANEL)
    assert problem is None and fcs is read.fcs
    fcs, problem = controltube.usable(read, path, {"CD45": "no such channel"}, PANEL)
    assert fcs is None and problem == f"{path}: channel(s) no such channel of the stained tube missing"


def test_the_stained_tube_as_its_own_control_is_refused():
    path = TEST_DATA / "high_fmo_stained.fcs"
    stained = read_fcs(path)
    with pytest.raises(InputError, match="the control tube is the same file as the stained tube"):
        controltube.refuse_same_tube(stained, controltube.read(path).fcs, path)
    controltube.refuse_same_tube(stained, None, None)  # no control: nothing to refuse
