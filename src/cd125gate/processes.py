"""Forked child processes: one way to start one, run a call in it, and learn how it ended.

Three places fork: the chunk runs each sample in its own child, the figure
worker imports matplotlib beside the analysis, and a QC page draws the
control's page beside the stained tube's. Each child leaves by ``os._exit``,
never through the parent's exit handlers (pytest's, atexit's, a finally of
the caller's), with its output flushed and a failure's traceback on its stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Ended:
    """How a child ended: its exit status, or the signal that killed it (then ``status`` is None)."""

    status: int | None = None
    signal: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0


def can_run_beside() -> bool:
    """Whether a forked child would run beside this process: fork exists and the process may use two CPUs."""
    return hasattr(os, "fork") and len(os.sched_getaffinity(0)) >= 2


def start(child: Callable[[], int | None]) -> int:
    """Fork; the child runs ``child()`` and exits with what it returns (None: 0; an exception: 1).

    Returns the child's pid (to `wait` for). The streams are flushed before the
    fork, so that nothing buffered is written twice, and again as the child leaves.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    status = 1  # pragma: no cover - the child's own coverage is not collected
    try:  # pragma: no cover
        status = child() or 0
    except BaseException:  # noqa: BLE001  # pragma: no cover - whatever it was, the parent learns it from the status
        traceback.print_exc()
    finally:  # pragma: no cover
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or gone: nothing more to say
                pass
        os._exit(status)


def wait(pid: int) -> Ended:
    """Wait for the child ``pid`` to end, and how it did."""
    _, raw = os.waitpid(pid, 0)
    if os.WIFSIGNALED(raw):
        return Ended(signal=os.WTERMSIG(raw))
    return Ended(status=os.waitstatus_to_exitcode(raw))


def beside(call: Callable[[], object]) -> Callable[[], bool] | None:
    """Run ``call()`` in a forked child; return ``finish() -> True if it succeeded``, which waits for it.

    None where that cannot run beside the caller (`can_run_beside`): the
    caller then does the work itself.
    """
    if not can_run_beside():
        return None

    def child() -> int:
        call()
        return 0

    pid = start(child)
    return lambda: wait(pid).ok
