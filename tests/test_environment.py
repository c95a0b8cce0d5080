"""Faults of the environment and of our own code: a crash, a full disk, a read-only folder.

A crash in a batch (`analyze --exit-zero`) becomes the sample's FAILED result with
the traceback in the job log; a folder that cannot be written is one line naming
it (exit 2). Tests run as root, where chmod does not stop a write: the faults are
raised by stand-ins for the system calls (always run) and, where this machine
lets the test mount one, by a real small or read-only tmpfs.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cd125gate import cli
from cd125gate.analysis.gating import hierarchy
from cd125gate.cli import main
from cd125gate.figures import plots

TEST_DATA = Path(__file__).parents[1] / "test_data"
LOW_FMO = [str(TEST_DATA / "low_fmo_stained.fcs"), "--control", str(TEST_DATA / "low_fmo_control.fcs"),
           "--sample-id", "low_fmo", "--quiet"]
FAULTS = {"disk full": (errno.ENOSPC, "No space left on device"),
          "read-only": (errno.EROFS, "Read-only file system")}


def crash(*args, **kwargs):
    raise RuntimeError("injected crash")


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err.strip()


# --- a crash of our own code ---------------------------------------------------------------------

@pytest.mark.parametrize("where", ["analysis", "figures"])
def test_a_crash_in_a_batch_is_the_samples_failed_result(tmp_path, capsys, monkeypatch, where):
    if where == "analysis":
        monkeypatch.setattr(hierarchy, "find_gates", crash)
    else:
        monkeypatch.setattr(plots, "plot_sample", crash)
    status = main(["analyze", *LOW_FMO, "--out", str(tmp_path), "--exit-zero"])
    out, err = capsys.readouterr()
    assert status == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["criterion"] == "FAILED"
    assert result["reasons"] == ["cd125gate crashed (RuntimeError: injected crash); "
                                 "see the job log — please report"]
    assert result["sample_id"] == "low_fmo"
    assert "low_fmo: FAILED | cd125gate crashed" in out
    # The job log keeps the traceback: it is the bug report.
    assert "Traceback" in err and "RuntimeError: injected crash" in err
    for name in result["outputs"].values():
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob(".staging-*"))


def test_a_crash_on_the_bench_is_raised_with_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(hierarchy, "find_gates", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        main(["analyze", *LOW_FMO, "--out", str(tmp_path)])
    assert not (tmp_path / "result.json").exists()


def test_a_crash_that_cannot_even_be_written_fails_the_job(tmp_path, monkeypatch):
    monkeypatch.setattr(hierarchy, "find_gates", crash)
    monkeypatch.setattr(plots, "plot_failure", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        main(["analyze", *LOW_FMO, "--out", str(tmp_path), "--exit-zero"])
    assert not (tmp_path / "result.json").exists()


def test_a_long_or_multi_line_crash_message_stays_one_short_line(tmp_path, capsys, monkeypatch):
    def crash_loudly(*args, **kwargs):
        raise ValueError("first line\nsecond line $x^2$ " + "y" * 1000)

    monkeypatch.setattr(hierarchy, "find_gates", crash_loudly)
    assert main(["analyze", *LOW_FMO, "--out", str(tmp_path), "--exit-zero"]) == 0
    reason, = json.loads((tmp_path / "result.json").read_text())["reasons"]
    assert reason.startswith("cd125gate crashed (ValueError: first line\\nsecond line $x^2$ yyy")
    assert "\n" not in reason and len(reason) < 300


# --- a folder that cannot be written -------------------------------------------------------------

def failing(fault):
    """A stand-in for os.replace or os.mkdir that raises the OSError of ``fault``."""
    code, text = FAULTS[fault]

    def call(*args, **kwargs):
        raise OSError(code, text, str(args[0]))

    return call


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("call", ["replace", "mkdir"])
def test_analyze_into_an_unwritable_folder_is_one_line(tmp_path, capsys, monkeypatch, fault, call):
    out = tmp_path / "out"
    monkeypatch.setattr(os, call, failing(fault))
    status = main(["analyze", *LOW_FMO, "--out", str(out), "--exit-zero"])
    monkeypatch.undo()
    assert status == 2
    assert one_line_error(capsys) == f"cd125gate: {out}: cannot write the sample's folder: {FAULTS[fault][1]}"
    assert not (out / "result.json").exists()
    assert not list(out.glob(".staging-*"))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Two analysed samples and their screening.json, as a batch leaves them."""
    folder = tmp_path_factory.mktemp("batch")
    for sample_id in ("low_fmo", "corrupt"):
        args = [str(TEST_DATA / f"{sample_id}_stained.fcs"), "--control",
                str(TEST_DATA / f"{sample_id}_control.fcs"), "--sample-id", sample_id, "--quiet"]
        assert main(["analyze", *args, "--out", str(folder / "samples" / sample_id), "--exit-zero"]) == 0
    results = [str(folder / "samples" / s / "result.json") for s in ("low_fmo", "corrupt")]
    assert main(["screening", *results, "--tsv", str(folder / "screening.tsv"),
                 "--json", str(folder / "screening.json")]) == 0
    return folder


def batch_commands(results_dir, out):
    results = [str(results_dir / "samples" / s / "result.json") for s in ("low_fmo", "corrupt")]
    return {
        "screening": (["screening", *results, "--tsv", str(out / "screening.tsv"),
                       "--json", str(out / "screening.json")], "screening.tsv"),
        "report": (["report", "--results-dir", str(results_dir / "samples"), "--out", str(out / "report.html"),
                    "--screening", str(results_dir / "screening.json")], "report.html"),
    }


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", ["screening", "report"])
def test_batch_tables_into_an_unwritable_folder_are_one_line(results_dir, tmp_path, capsys, monkeypatch,
                                                              fault, command):
    out = tmp_path / "out"
    out.mkdir()
    argv, name = batch_commands(results_dir, out)[command]
    capsys.readouterr()
    monkeypatch.setattr(os, "replace", failing(fault))
    status = main(argv)
    monkeypatch.undo()
    assert status == 2
    assert one_line_error(capsys) == f"cd125gate: {out}: cannot write {name}: {FAULTS[fault][1]}"
    assert not (out / name).exists()
    assert not [p for p in out.rglob("*") if p.is_file()]  # no half-written file left behind


# --- the same, on a real file system that is full or read-only --------------------------------------

def test_real_full_and_read_only_file_systems_are_one_line(results_dir, tmpfs, capsys):
    full = tmpfs("size=64k")
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)  # fill it to the last block
    try:
        with pytest.raises(OSError) as filled:
            while True:
                os.write(fd, b"\0" * 4096)
        assert filled.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    read_only = tmpfs("size=64k,ro")
    capsys.readouterr()
    for folder, problem in ((full, "No space left on device"), (read_only, "Read-only file system")):
        out = folder / "low_fmo"
        if folder is full:
            out = folder  # a new folder needs no data block: the files are what does not fit
        assert main(["analyze", *LOW_FMO, "--out", str(out), "--exit-zero"]) == 2
        assert one_line_error(capsys) == f"cd125gate: {out}: cannot write the sample's folder: {problem}"
        for command, (argv, name) in batch_commands(results_dir, folder).items():
            assert main(argv) == 2, command
            assert one_line_error(capsys) == f"cd125gate: {folder}: cannot write {name}: {problem}"


# --- the process's memory --------------------------------------------------------------------------

FREED_BYTES = """
import ctypes, sys
import numpy as np
from cd125gate import cli
if sys.argv[1] == "keep":
    cli.keep_freed_memory()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
array = np.ones(20 * 2**20 // 8)
del array
print(mallinfo2().fordblks)
"""


@pytest.mark.parametrize("how", ["keep", "default"])
def test_freed_arrays_stay_with_the_process_for_the_next_ones(how):
    # glibc's own accounting: the bytes free inside the heap after a 20 MB array is freed.
    # By default such an array is mapped on its own and handed back to the kernel when freed.
    run = subprocess.run([sys.executable, "-c", FREED_BYTES, how], capture_output=True, text=True, check=True)
    kept = int(run.stdout)
    assert (kept >= 20 * 2**20) == (how == "keep"), kept


def test_only_the_analysing_commands_keep_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    with pytest.raises(SystemExit):
        main(["inspect"])  # no file: argparse refuses
    assert calls == []
    with pytest.raises(SystemExit):
        main(["analyze"])
    assert calls == [True]
