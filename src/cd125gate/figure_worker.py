"""A forked process that imports matplotlib while a sample is analysed, then draws its figures.

Importing matplotlib (~0.4 s) and drawing the stained tube's page (~0.4 s)
are most of what one ``cd125gate analyze`` of a 100,000-event pair costs, and
the import needs nothing of the sample. So the process forks this worker
before the analysis starts (while it is small and has no threads); the worker
imports the plotting modules on the second core while the first analyses,
then waits for its one job. The tubes reach it pickled through a pipe, their
arrays' bytes through a memory file both hold (Linux), without their raw
events (the figures draw the compensated, transformed ones); it writes the
figures into the sample's staging folder itself.

The answer comes back the same way: the figure paths, or the exception the
drawing raised (raised again by the caller, as if drawn in-process). A worker
that dies or cannot start leaves the drawing to the caller, in-process, as
before: the worker only ever makes the figures sooner, never different.
"""

import dataclasses
import itertools
import mmap
import os
import pickle
import select
import signal
import sys
import traceback


def start():
    """A `FigureWorker`, or None where it would not help (no fork, one CPU, matplotlib already imported).

    A process that has matplotlib already (a chunk's sample, which inherits its
    parent's imports) gains nothing from a worker.
    """
    if not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2 or "matplotlib.figure" in sys.modules:
        return None
    return fork()


def fork():
    """Fork the worker (`start` decides whether it is worth it)."""
    jobs_read, jobs_write = os.pipe()
    answers_read, answers_write = os.pipe()
    # The events go through a memory file both processes hold, not the pipe: a
    # 1,000,000-event pair is ~250 MB, which a pipe copies in ~0.6 s and the worker
    # then maps without copying.
    shared = _memory_file()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's own coverage is not collected
        os.close(jobs_write)
        os.close(answers_read)
        os._exit(_serve(jobs_read, answers_write, shared))
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
            from . import plots  # imported now, while the parent analyses: matplotlib comes with it
            import matplotlib.figure  # noqa: F401
            import matplotlib.backends.backend_agg  # noqa: F401

            # Then the pages' Axes, until the job comes (the control's page, drawn by a
            # process forked from this one, has its own copy of them).
            plots.make_spare_axes(SPARE_AXES, enough=lambda: _waiting(job_pipe))
            name, args = _receive(pickle.load(job_pipe), shared)
        except EOFError:
            return 0  # closed unused
        except BaseException:
            traceback.print_exc()
            return 1
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


def _send(job, shared):
    """The pipe's message for ``job``: the pickle, with its arrays' bytes written to ``shared``."""
    if shared is None:
        return pickle.dumps(job, protocol=5), ()
    buffers = []
    message = pickle.dumps(job, protocol=5, buffer_callback=buffers.append)
    sizes = []
    with open(shared, "wb", closefd=False) as out:
        for buffer in buffers:
            raw = buffer.raw()
            out.write(raw)
            sizes.append(raw.nbytes)
    return message, tuple(sizes)


def _receive(sent, shared):
    """The job of a `_send` message: its arrays backed by the shared file (copy-on-write, not copied)."""
    message, sizes = sent
    if not sum(sizes):
        return pickle.loads(message, buffers=[b""] * len(sizes))
    mapped = memoryview(mmap.mmap(shared, sum(sizes), access=mmap.ACCESS_COPY))
    ends = itertools.accumulate(sizes)
    return pickle.loads(message, buffers=[mapped[end - size:end] for size, end in zip(sizes, ends)])


class FigureWorker:
    """The parent's handle on a started worker: one ``draw`` or ``close``."""

    def __init__(self, pid, jobs, answers, shared=None):
        self.pid, self.jobs, self.answers, self.shared = pid, jobs, answers, shared
        self.used = self.sent = False

    def draw(self, name, *args):
        """Start ``plots.<name>(*args)`` in the worker; returns ``finish() -> (ok, value)``.

        ``ok`` is False when the worker could not take or answer the job
        (``value`` is then None and the caller draws in-process); an exception
        raised by the drawing itself is raised again by ``finish``. Tubes whose
        events exceed ``SHARED_BYTES`` are drawn in-process: a second copy of
        them would cost more memory than the worker saves time.
        """
        if self.used or sum(_event_bytes(a) for a in args) > SHARED_BYTES:
            self.close()
            return lambda: (False, None)
        self.used = True
        try:
            job = (name, tuple(_without_raw_events(a) for a in args))
            pickle.dump(_send(job, self.shared), self.jobs)
            self.jobs.close()
            self.sent = True
        except (OSError, pickle.PicklingError):
            self.close()
            return lambda: (False, None)

        def finish():
            try:
                kind, value = pickle.load(self.answers)
            except Exception:  # the worker died (killed, out of memory) before answering
                kind, value = "lost", None
            self.close()
            if kind == "error":
                raise value
            return kind == "value", value

        return finish

    def close(self):
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
            os.waitpid(self.pid, 0)
            self.pid = None
        if self.shared is not None:
            os.close(self.shared)
            self.shared = None


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
