"""processes: a forked child runs one call and leaves by os._exit; the parent learns how it ended."""

import os
import signal

from cd125gate import processes


def test_a_child_that_succeeds_ends_with_status_zero(tmp_path):
    ended = processes.wait(processes.start(lambda: (tmp_path / "done").write_text("yes") and None))
    assert ended == processes.Ended(status=0) and ended.ok
    assert (tmp_path / "done").read_text() == "yes"


def test_a_child_returns_its_exit_status():
    ended = processes.wait(processes.start(lambda: 3))
    assert ended.status == 3 and ended.signal is None and not ended.ok


def test_a_child_that_raises_exits_1_with_its_traceback_on_stderr(capfd):
    def child():
        raise RuntimeError("drawn badly")

    ended = processes.wait(processes.start(child))
    assert ended == processes.Ended(status=1)
    assert "RuntimeError: drawn badly" in capfd.readouterr().err


def test_a_child_killed_by_a_signal_says_which():
    ended = processes.wait(processes.start(lambda: os.kill(os.getpid(), signal.SIGKILL)))
    assert ended == processes.Ended(signal=signal.SIGKILL) and not ended.ok


def test_the_parent_goes_on_after_the_child(tmp_path):
    """The child never runs the parent's code after the fork (its own exit handlers, the rest of this test)."""
    marker = tmp_path / "after"
    pid = processes.start(lambda: None)
    marker.write_text(str(os.getpid()))  # only the parent gets here
    assert processes.wait(pid).ok and marker.read_text() == str(os.getpid())


def test_beside_is_none_where_it_cannot_run_beside(monkeypatch):
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0})
    assert not processes.can_run_beside() and processes.beside(lambda: None) is None
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 1})
    assert processes.beside(lambda: None)() is True
    assert processes.beside(lambda: 1 / 0)() is False
