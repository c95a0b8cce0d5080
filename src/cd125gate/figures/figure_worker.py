"""A forked process that imports matplotlib while a sample is analysed, then draws its figures.

Importing matplotlib (~0.4 s) and drawing the stained tube's page (~0.4 s)
are most of what one ``cd125gate analyze`` of a 100,000-event pair costs, and
the import needs nothing of the sample. So the process forks this worker
before the analysis starts (while it is small and has no threads); the worker
imports the plotting modules on the second core while the first analyses,
then waits for its one job. The tubes reach it pickled through a pipe, their
arrays' bytes through a memory file both hold (Linux), without their raw
events (the figures draw the compensated, transformed ones); it writes the
figures into the sample's staging folder itself. The tubes' transformed events
are made in that memory file in the first place (``allocate``), so the largest
arrays reach the worker without being copied at all.

The answer comes back the same way: the figure paths, or the exception the
drawing raised (raised again by the caller, as if drawn in-process). A worker
that dies or cannot start leaves the drawing to the caller, in-process, as
before: the worker only ever makes the figures sooner, never different.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import mmap
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from cd125gate import processes

if TYPE_CHECKING:
    import numpy as np


def start() -> FigureWorker | None:
    """A `FigureWorker`, or None where it would not help (no fork, one CPU, matplotlib already imported).

    A process that has matplotlib already (a chunk's sample, which inherits its
    parent's imports) gains nothing from a worker.
    """
    if not processes.can_run_beside() or "matplotlib.figure" in sys.modules:
        return None
    return fork()


def fork() -> FigureWorker:
    """Fork the worker (`start` decides whether it is worth it)."""
    jobs_read, jobs_write = os.pipe()
    answers_read, answers_write = os.pipe()
    # The events go through a memory file both processes hold, not the pipe: a
    # 1,000,000-event pair is ~250 MB, which a pipe copies in ~0.6 s and the worker
    # then maps without copying.
    shared = _memory_file()

    def child() -> int:  # pragma: no cover - the child's own coverage is not collected
        os.close(jobs_write)
        os.close(answers_read)
        return _serve(jobs_read, answers_write, shared)

    pid = processes.start(child)
    os.close(jobs_read)
    os.close(answers_write)
    return FigureWorker(pid, os.fdopen(jobs_write, "wb"), os.fdopen(answers_read, "rb"), shared)


def _memory_file():
    """An anonymous memory file (Linux memfd), or None where there is none: then all goes by the pipe."""
    try:
        return os.memfd_create("cd125gate-figures", 0)
    except (AttributeError, OSError):  # not Linux, or refused by a sandbox
        return None


def _serve(jobs, answers, shared):
    """The worker: import, take one job, answer it; its exit status."""
    with os.fdopen(jobs, "rb") as job_pipe, os.fdopen(answers, "wb") as answer_pipe:
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401

            from cd125gate.figures import (
                plots,  # imported now, while the parent analyses: matplotlib comes with it
            )

            # Then the pages' Axes, until the job comes (the control's page, drawn by a
            # process forked from this one, has its own copy of them).
            plots.make_spare_axes(SPARE_AXES, enough=lambda: _waiting(job_pipe))
            name, args = _receive(pickle.load(job_pipe), shared)
        except EOFError:
            return 0  # closed unused
        # Anything else leaves through processes.start: its traceback, exit status 1.
        try:
            answer = ("value", getattr(plots, name)(*args))
        except BaseException as exc:
            traceback.print_exc()
            answer = ("error", exc)
        try:
            pickle.dump(answer, answer_pipe)
        except Exception:  # an exception that does not pickle: its text still reaches the caller
            pickle.dump(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")), answer_pipe)
        return 0


def _waiting(pipe):
    """Whether ``pipe`` has something to read now."""
    return bool(select.select([pipe], [], [], 0)[0])


def _send(job, shared, placed=None, start=0):
    """The pipe's message for ``job``: the pickle, with its arrays' bytes written to ``shared``.

    Arrays already in ``shared`` (``placed``: id -> (array, offset), from
    `FigureWorker.allocate`) are named by their place instead; the others'
    bytes are written after ``start``, the end of those.
    """
    if shared is None:
        return pickle.dumps(job, protocol=5), 0, ()
    buffers = []
    stream = io.BytesIO()
    _Pickler(stream, placed or {}, protocol=5, buffer_callback=buffers.append).dump(job)
    sizes = []
    with open(shared, "r+b", closefd=False) as out:
        out.seek(start)
        for buffer in buffers:
            raw = buffer.raw()
            out.write(raw)
            sizes.append(raw.nbytes)
    return stream.getvalue(), start, tuple(sizes)


class _Pickler(pickle.Pickler):
    """Names the arrays that are already in the memory file by their place there."""

    def __init__(self, stream: IO[bytes], placed: dict, **kwargs: object) -> None:
        super().__init__(stream, **kwargs)
        self.placed = placed

    def persistent_id(self, obj: object) -> tuple | None:
        offset = _offset(self.placed, obj)
        return None if offset is None else ("placed", offset, obj.shape)


def _offset(placed, obj):
    """Where ``obj`` lies in the memory file, if it is one of the ``placed`` arrays (else None)."""
    entry = placed.get(id(obj))
    return entry[1] if entry is not None and entry[0] is obj else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream: IO[bytes], mapped: memoryview, **kwargs: object) -> None:
        super().__init__(stream, **kwargs)
        self.mapped = mapped

    def persistent_load(self, pid: tuple) -> np.ndarray:
        import numpy as np

        _, offset, shape = pid
        size = 8 * math.prod(shape)
        return np.ndarray(shape, np.float64, buffer=self.mapped[offset:offset + size], order="F")


def _receive(sent, shared):
    """The job of a `_send` message: its arrays backed by the shared file (copy-on-write, not copied)."""
    message, start, sizes = sent
    total = start + sum(sizes)
    mapped = memoryview(mmap.mmap(shared, total, access=mmap.ACCESS_COPY)) if total else memoryview(b"")
    ends = itertools.accumulate(sizes, initial=start)
    buffers = [mapped[end:end + size] for size, end in zip(sizes, ends)]
    return _Unpickler(io.BytesIO(message), mapped, buffers=buffers).load()


class FigureWorker:
    """The parent's handle on a started worker: one ``draw`` or ``close``."""

    def __init__(self, pid: int, jobs: IO[bytes], answers: IO[bytes], shared: int | None = None) -> None:
        self.pid, self.jobs, self.answers, self.shared = pid, jobs, answers, shared
        self.used = self.sent = False
        self.placed = {}  # id -> (array, offset) of the arrays made in the memory file
        self.end = 0      # the bytes of the memory file they take
        self.lock = threading.Lock()  # the two tubes are made side by side

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised column-major float64 array that reaches the worker without a copy.

        It lives in the memory file; a plain numpy array where there is none,
        where the job is already gone, or past ``SHARED_BYTES``.
        """
        import numpy as np

        size = 8 * math.prod(shape)
        with self.lock:
            if self.shared is None or self.used or not size or self.end + size > SHARED_BYTES:
                return np.empty(shape, order="F")
            offset = self.end
            self.end += -(-size // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
            os.ftruncate(self.shared, self.end)
            array = np.ndarray(shape, np.float64, buffer=mmap.mmap(self.shared, size, offset=offset), order="F")
            self.placed[id(array)] = (array, offset)
            return array

    def draw(self, name: str, *args: object) -> Callable[[], tuple[bool, object]]:
        """Start ``plots.<name>(*args)`` in the worker; returns ``finish() -> (ok, value)``.

        ``ok`` is False when the worker could not take or answer the job
        (``value`` is then None and the caller draws in-process); an exception
        raised by the drawing itself is raised again by ``finish``. Tubes whose
        events exceed ``SHARED_BYTES`` are drawn in-process: a second copy of
        them would cost more memory than the worker saves time.
        """
        unplaced = [a for a in args if _offset(self.placed, getattr(a, "data", None)) is None]
        if self.used or sum(_event_bytes(a) for a in unplaced) > SHARED_BYTES:
            self.close()
            return lambda: (False, None)
        self.used = True
        try:
            job = (name, tuple(_without_raw_events(a) for a in args))
            pickle.dump(_send(job, self.shared, self.placed, self.end), self.jobs)
            self.jobs.close()
            self.sent = True
        except (OSError, pickle.PicklingError):
            self.close()
            return lambda: (False, None)

        def finish() -> tuple[bool, object]:
            try:
                kind, value = pickle.load(self.answers)
            except Exception:  # the worker died (killed, out of memory) before answering
                kind, value = "lost", None
            self.close()
            if kind == "error":
                raise value
            return kind == "value", value

        return finish

    def close(self) -> None:
        """End the worker and reap it: at once if it has no job (a bad input need not wait for its imports)."""
        self.used = True
        for pipe in (self.jobs, self.answers):
            try:
                pipe.close()
            except OSError:
                pass
        if self.pid is not None:
            if not self.sent:
                os.kill(self.pid, signal.SIGKILL)
            processes.wait(self.pid)
            self.pid = None
        if self.shared is not None:
            os.close(self.shared)  # the arrays made in it stay mapped where they are used
            self.shared = None
        self.placed = {}


# Axes made ahead for a page: as many as the fullest page has panels (the time panel has two).
SPARE_AXES = 14
# The most event bytes handed to the worker (a pair of ~2,000,000-event tubes of 14 channels);
# beyond that the second copy would weigh more than the worker's ~0.5 s.
SHARED_BYTES = 512 * 2**20


def _event_bytes(value):
    """The bytes of a tube's transformed events (0 for anything else)."""
    data = getattr(value, "data", None)
    return data.nbytes if hasattr(data, "nbytes") else 0


def _without_raw_events(value):
    """A tube (TubeAnalysis) without its file's raw events, which no figure draws; anything else as it is."""
    fcs = getattr(value, "fcs", None)
    if dataclasses.is_dataclass(value) and fcs is not None and getattr(fcs, "events", None) is not None:
        return dataclasses.replace(value, fcs=dataclasses.replace(fcs, events=None))
    return value
