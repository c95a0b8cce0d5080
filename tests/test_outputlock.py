"""The output-folder lock: one run at a time per outdir, a gone run's lock taken over.

The workflow's use of it (refused before any job, not taken by a dry run, released at
the end) is in tests/test_workflow.py.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from cd125gate.io import outputlock
from cd125gate.io.outputlock import OutdirLocked
from conftest import gone_pid, write_lock


def in_use_message(outdir, lock, host, pid, workdir="/other/checkout"):
    return (f"{outdir}: in use by another run (host {host}, pid {pid}, working directory {workdir}); "
            f"wait for it to end, or if no such run is going, remove {lock}")


def test_taken_names_this_process_and_released_leaves_nothing(tmp_path):
    outdir = tmp_path / "new/out"  # created when missing
    outputlock.take(outdir)
    lock = outdir / outputlock.LOCK_NAME
    holder = json.loads(lock.read_text())
    assert holder == {"host": socket.gethostname(), "pid": os.getpid(),
                      "start": outputlock.process_start(os.getpid()), "workdir": os.getcwd()}
    assert isinstance(holder["start"], int)  # /proc tells, against a reused pid
    outputlock.release(outdir)
    assert list(outdir.iterdir()) == []


def test_a_live_holder_on_this_host_keeps_the_folder(tmp_path):
    lock = write_lock(tmp_path, socket.gethostname(), os.getpid())
    held = lock.read_bytes()
    with pytest.raises(OutdirLocked) as refused:
        outputlock.take(tmp_path)
    assert str(refused.value) == in_use_message(tmp_path, lock, socket.gethostname(), os.getpid())
    assert lock.read_bytes() == held


def test_a_holder_on_another_host_cannot_be_checked_and_keeps_the_folder(tmp_path):
    lock = write_lock(tmp_path, "another-host.example", gone_pid())
    held = lock.read_bytes()
    with pytest.raises(OutdirLocked, match="in use by another run"):
        outputlock.take(tmp_path)
    assert lock.read_bytes() == held


def test_an_unreadable_lock_keeps_the_folder(tmp_path):
    lock = tmp_path / outputlock.LOCK_NAME
    lock.write_text("{torn")
    with pytest.raises(OutdirLocked) as refused:
        outputlock.take(tmp_path)
    assert str(refused.value) == in_use_message(tmp_path, lock, "?", "?", "?")
    assert lock.read_text() == "{torn"


def test_a_gone_runs_lock_is_taken_over_with_one_line(tmp_path, capsys):
    pid = gone_pid()
    lock = write_lock(tmp_path, socket.gethostname(), pid, "/killed/checkout")
    outputlock.take(tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert capsys.readouterr().err == (
        f"cd125gate: {tmp_path}: taking over the lock of a run that is gone "
        f"(host {socket.gethostname()}, pid {pid}, working directory /killed/checkout)\n")
    assert [p.name for p in tmp_path.iterdir()] == [outputlock.LOCK_NAME]  # nothing set aside is left


def test_a_reused_pid_is_told_by_its_start_time(tmp_path):
    # This test's pid is alive; the lock says it started at another time: another process.
    start = outputlock.process_start(os.getpid())
    write_lock(tmp_path, socket.gethostname(), os.getpid(), start=start + 1)
    outputlock.take(tmp_path)
    assert json.loads((tmp_path / outputlock.LOCK_NAME).read_text())["start"] == start


def test_gone_only_when_this_host_can_tell():
    host = socket.gethostname()
    assert outputlock.holder_is_gone({"host": host, "pid": gone_pid()})
    assert not outputlock.holder_is_gone({"host": host, "pid": os.getpid(), "start": None})
    assert not outputlock.holder_is_gone({"host": host, "pid": "123"})
    assert not outputlock.holder_is_gone({})
    assert outputlock.process_start(gone_pid()) is None


def test_release_never_drops_another_runs_lock(tmp_path):
    lock = write_lock(tmp_path, socket.gethostname(), os.getpid(), "/other/checkout")
    held = lock.read_bytes()
    outputlock.release(tmp_path)
    assert lock.read_bytes() == held
    outputlock.release(tmp_path / "never-made")  # no lock: nothing to do


def test_a_folder_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").touch()
    with pytest.raises(OutdirLocked) as refused:
        outputlock.take(tmp_path / "file/out")
    assert str(refused.value) == f"{tmp_path / 'file/out'}: cannot write the output folder: Not a directory"


def test_a_lock_that_cannot_be_written_is_not_left_empty(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputlock.json, "dump", full)
    with pytest.raises(OutdirLocked) as refused:
        outputlock.take(tmp_path)
    assert str(refused.value) == f"{tmp_path}: cannot write the output folder: No space left on device"
    assert list(tmp_path.iterdir()) == []


HOLD = """
import sys
from cd125gate.io import outputlock
try:
    outputlock.take(sys.argv[1])
    print("held", flush=True)
except outputlock.OutdirLocked:
    print("refused", flush=True)
sys.stdin.read()  # keep the lock (a live holder) until the test is done
"""


@pytest.mark.parametrize("stale", [False, True], ids=["empty folder", "gone run's lock"])
def test_of_runs_starting_together_exactly_one_holds_the_folder(tmp_path, stale):
    if stale:
        write_lock(tmp_path, socket.gethostname(), gone_pid(), "/killed/checkout")
    runs = [subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(4)]
    try:
        said = sorted(run.stdout.readline().strip() for run in runs)
        holder = json.loads((tmp_path / outputlock.LOCK_NAME).read_text())
    finally:
        for run in runs:
            run.communicate("")
    assert said == ["held", "refused", "refused", "refused"]
    assert holder["pid"] in {run.pid for run in runs}
    assert [p.name for p in tmp_path.iterdir()] == [outputlock.LOCK_NAME]
