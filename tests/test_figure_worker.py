"""The figure worker draws exactly what the process would have drawn, or leaves the drawing to it."""

import os
import signal
from pathlib import Path

import pytest

from cd125gate.analysis.pipeline import analyze_sample
from cd125gate.figures import figure_worker, plots
from cd125gate.results.outputs import write_outputs
from cd125gate.settings import load_settings

TEST_DATA = Path(__file__).parents[1] / "test_data"
FIGURES = ("qc.png", "qc_control.png", "qc.svg", "qc_control.svg")


@pytest.fixture(scope="module")
def analysis():
    return analyze_sample(TEST_DATA / "low_fmo_stained.fcs", TEST_DATA / "low_fmo_control.fcs",
                          load_settings(), sample_id="low_fmo")


def written(analysis, folder, worker):
    result = write_outputs(analysis, folder, ("png", "svg"), worker=worker)
    return {name: (folder / name).read_bytes() for name in FIGURES}, result


@pytest.mark.slow
def test_the_worker_draws_the_figures_drawn_in_process(analysis, tmp_path):
    here, result_here = written(analysis, tmp_path / "here", None)
    worker = figure_worker.fork()
    there, result_there = written(analysis, tmp_path / "worker", worker)
    assert worker.pid is None  # answered and reaped
    assert there == here
    assert result_there.outputs == result_here.outputs


@pytest.mark.slow
def test_a_worker_that_died_leaves_the_drawing_to_the_process(analysis, tmp_path):
    here, _ = written(analysis, tmp_path / "here", None)
    worker = figure_worker.fork()
    os.kill(worker.pid, signal.SIGKILL)
    there, _ = written(analysis, tmp_path / "worker", worker)
    assert there == here


def test_an_error_of_the_drawing_is_raised_by_the_caller(tmp_path, monkeypatch):
    def crash(*args):
        raise RuntimeError("injected crash")

    monkeypatch.setattr(plots, "plot_failure", crash)  # before the fork: the worker has it too
    worker = figure_worker.fork()
    finish = worker.draw("plot_failure", None, tmp_path, ("png",))
    with pytest.raises(RuntimeError, match="injected crash"):
        finish()
    assert worker.draw("plot_failure", None, tmp_path, ("png",))() == (False, None)  # one job only


def test_an_unused_worker_ends_when_closed():
    worker = figure_worker.fork()
    pid = worker.pid
    worker.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_no_worker_where_it_would_not_help(monkeypatch):
    import matplotlib.figure  # noqa: F401 - this process has matplotlib already

    assert figure_worker.start() is None
    monkeypatch.delitem(__import__("sys").modules, "matplotlib.figure")
    monkeypatch.setattr(figure_worker.os, "sched_getaffinity", lambda pid: {0})
    assert figure_worker.start() is None


@pytest.mark.slow
def test_tubes_too_large_to_copy_are_drawn_in_process(analysis, tmp_path, monkeypatch):
    here, _ = written(analysis, tmp_path / "here", None)
    monkeypatch.setattr(figure_worker, "SHARED_BYTES", analysis.stained.data.nbytes)  # the pair is larger
    worker = figure_worker.fork()
    monkeypatch.setattr(figure_worker, "_send", None)  # nothing is sent
    there, _ = written(analysis, tmp_path / "worker", worker)
    assert worker.pid is None and worker.shared is None  # ended and reaped
    assert there == here


@pytest.mark.slow
def test_without_a_memory_file_everything_goes_by_the_pipe(analysis, tmp_path, monkeypatch):
    here, _ = written(analysis, tmp_path / "here", None)
    monkeypatch.delattr(figure_worker.os, "memfd_create")
    worker = figure_worker.fork()
    assert worker.shared is None
    there, _ = written(analysis, tmp_path / "worker", worker)
    assert there == here


def test_the_worker_sees_when_its_job_has_come():
    # It makes a page's Axes ahead only until then.
    read, write = os.pipe()
    with os.fdopen(read, "rb") as jobs, os.fdopen(write, "wb") as sender:
        assert not figure_worker._waiting(jobs)
        sender.write(b"x")
        sender.flush()
        assert figure_worker._waiting(jobs)


@pytest.mark.slow
def test_events_made_in_the_memory_file_reach_the_worker_uncopied(analysis, tmp_path, monkeypatch):
    here, _ = written(analysis, tmp_path / "here", None)
    worker = figure_worker.fork()
    placed = analyze_sample(TEST_DATA / "low_fmo_stained.fcs", TEST_DATA / "low_fmo_control.fcs",
                            load_settings(), sample_id="low_fmo", allocate=worker.allocate)
    assert {id(placed.stained.data), id(placed.control.data)} <= set(worker.placed)
    messages = []
    send = figure_worker._send
    monkeypatch.setattr(figure_worker, "_send", lambda *args: messages.append(send(*args)) or messages[-1])
    there, result = written(placed, tmp_path / "worker", worker)
    assert there == here
    assert result.to_json() == written(analysis, tmp_path / "again", None)[1].to_json()
    _, start, sizes = messages[0]
    assert start >= placed.stained.data.nbytes + placed.control.data.nbytes
    assert max(sizes) < placed.control.data.nbytes  # the events themselves were not copied


def test_arrays_beyond_the_memory_budget_are_made_as_usual(monkeypatch):
    worker = figure_worker.fork()
    try:
        small = worker.allocate((1000, 4))
        monkeypatch.setattr(figure_worker, "SHARED_BYTES", worker.end)
        large = worker.allocate((1000, 4))
        assert id(small) in worker.placed and id(large) not in worker.placed
        assert small.flags.f_contiguous and large.flags.f_contiguous and large.shape == (1000, 4)
    finally:
        worker.close()
    assert worker.allocate((10, 2)).shape == (10, 2)  # a closed worker: numpy's own
