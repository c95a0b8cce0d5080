"""Shared test helpers: where the test FCS files are, a tiny FCS writer for crafted files, a tmpfs,
one-line errors, and the workflow and Chromium as the end-to-end tests run them."""

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
TEST_CORPUS = ROOT / "test_data" / "corpus"
SHARED_CORPUS = ROOT / ".." / "shared" / "corpus"


@pytest.fixture
def test_corpus():
    """The always-present copies of real FCS files (see test_data/corpus/SOURCES.md)."""
    return TEST_CORPUS


@pytest.fixture
def shared_corpus():
    """The full shared corpus; tests using it skip when the folder is absent."""
    if not SHARED_CORPUS.is_dir():
        pytest.skip("../shared/corpus is not present")
    return SHARED_CORPUS


def build_fcs(columns, *, names=None, version="FCS3.1", datatype="F", byteorder="1,2,3,4", bits=None,
              ranges=None, keywords=None, delimiter="/", blank_header_data=False, data_end_extra=0):
    """Return the bytes of a small list-mode FCS file.

    Parameters
    ----------
    columns : 2-D array-like, shape (events, channels)
        Values as stored (integers for $DATATYPE I).
    bits : list of int, optional
        $PnB per channel; integer widths that are not 8/16/32/64 are written byte by byte.
    keywords : dict, optional
        Extra or overriding TEXT keywords (str -> str), written after the standard ones.
    blank_header_data : bool
        Leave the HEADER DATA offsets blank, as writers do for files over 99,999,999 bytes.
    data_end_extra : int
        Added to the DATA end offset in both HEADER and TEXT (1 mimics MACSQuant files).
    """
    columns = np.asarray(columns)
    n_events, n_channels = columns.shape
    names = names or [f"FL{i}-A" for i in range(1, n_channels + 1)]
    width = {"F": 32, "D": 64}.get(datatype)
    bits = bits or [width or 16] * n_channels
    ranges = ranges or [1024] * n_channels
    data = _encode(columns, datatype, bits, byteorder.startswith("1"))
    text = {"$BYTEORD": byteorder, "$DATATYPE": datatype, "$MODE": "L", "$NEXTDATA": "0",
            "$PAR": str(n_channels), "$TOT": str(n_events)}
    for i in range(n_channels):
        text.update({f"$P{i + 1}N": names[i], f"$P{i + 1}B": str(bits[i]), f"$P{i + 1}R": str(ranges[i]),
                     f"$P{i + 1}E": "0,0"})
    text.update(keywords or {})

    def segment(begin_data, end_data):
        pairs = dict(text, **{"$BEGINDATA": f"{begin_data:020d}", "$ENDDATA": f"{end_data:020d}"})
        escaped = [part.replace(delimiter, delimiter * 2) for kv in pairs.items() for part in kv]
        return (delimiter + delimiter.join(escaped) + delimiter).encode("latin-1")

    text_length = len(segment(0, 0))  # offsets are fixed-width, so the length does not change
    data_start = 58 + text_length
    data_end = data_start + len(data) - 1 + data_end_extra
    header_data = (0, 0) if blank_header_data else (data_start, data_end)
    header = f"{version}    " + "".join(
        f"{value:>8}" for value in (58, 58 + text_length - 1, *header_data, 0, 0))
    if blank_header_data:
        header = header[:26] + " " * 16 + header[42:]
    return header.encode("ascii") + segment(data_start, data_end) + data + b"\0" * data_end_extra


def _encode(columns, datatype, bits, little):
    endian = "<" if little else ">"
    if datatype in ("F", "D"):
        return columns.astype(f"{endian}f{4 if datatype == 'F' else 8}").tobytes()
    # Written value by value with int.to_bytes, independently of the reader's numpy decoding.
    order = "little" if little else "big"
    return b"".join(
        int(value).to_bytes(width // 8, order)
        for row in columns for value, width in zip(row, bits))


@pytest.fixture
def make_fcs(tmp_path):
    """Write ``build_fcs(...)`` bytes to a file in tmp_path and return its path."""
    counter = iter(range(1_000_000))

    def make(columns, name=None, **options):
        path = tmp_path / (name or f"crafted_{next(counter)}.fcs")
        path.write_bytes(build_fcs(columns, **options))
        return path

    return make


def write_subset_sheet(path, sample_ids):
    """A sheet of some test_data samples, elsewhere, with absolute paths."""
    lines = (ROOT / "test_data/samples.tsv").read_text().splitlines()
    keep = [lines[0]]
    for line in lines[1:]:
        cells = line.split("\t")
        if cells[0] in sample_ids:
            cells[1:3] = [str(ROOT / "test_data" / c) if c else "" for c in cells[1:3]]
            keep.append("\t".join(cells))
    path.write_text("\n".join(keep) + "\n")
    return path


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (options given to the returned function); unmounted at the end."""
    mounted = []

    def mount(options):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            # test_environment.py's stand-in tests cover the same faults where mounting is not allowed.
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    if shutil.which("mount") is None:
        pytest.skip("no mount command; test_environment.py's stand-in tests cover these faults")
    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def input_error(function, *args, **kwargs):
    """The message of the InputError that ``function(*args, **kwargs)`` raises: one line."""
    from cd125gate.errors import InputError

    with pytest.raises(InputError) as caught:
        function(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the workflow, run for real (tests marked slow) ----------------------------------------------

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake_command(workdir, samples, outdir, *extra):
    """The workflow on the sheet ``samples`` into ``outdir``; ``extra``: more config values, then flags."""
    return [
        str(SNAKEMAKE), "--snakefile", str(ROOT / "workflow/Snakefile"),
        "--directory", str(workdir), "--configfile", str(ROOT / "config/config.yaml"),
        "--config", f"samples={samples}", f"outdir={outdir}", *extra,
    ]


def run_snakemake(workdir, samples, outdir, *extra, timeout=900, env=None):
    return subprocess.run(snakemake_command(workdir, samples, outdir, *extra),
                          capture_output=True, text=True, timeout=timeout, env=env)


def cd125gate_lines(stderr):
    """cd125gate's own lines among Snakemake's output."""
    return [line for line in stderr.splitlines() if line.startswith("cd125gate:")]


def one_error_line(proc):
    """The one cd125gate line of a run that stopped, with no traceback."""
    errors = cd125gate_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


def screening_rows(outdir):
    """sample_id -> row of the batch's screening.json."""
    return {row["sample_id"]: row for row in json.loads((outdir / "screening.json").read_text())["samples"]}


# --- headless Chromium (tests marked slow) -------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def run_chromium(profile, *args, timeout=120):
    """Run headless Chromium with the browser profile folder ``profile``; returns (stdout, console lines)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("Chromium is needed for the browser tests: run scripts/setup.sh --test (as root)")
    done = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def chromium(tmp_path, *args):
    """Run headless Chromium in a fresh browser profile under ``tmp_path``; returns (stdout, console lines)."""
    return run_chromium(tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}", *args)


def driver_out(dom):
    """What a driver script appended to a page recorded (JSON in its <pre id="driver-out">)."""
    return json.loads(html.unescape(re.search(r'<pre id="driver-out">(.*?)</pre>', dom, re.S).group(1)))


# Component means (decades) of a typical marrow, in MARROW_FEATURES order: the populations'
# and the gating's unit tests name the same cells.
MARROW_FEATURES = ["FSC", "SSC", "CD45", "CD34", "CD117", "HLA-DR", "CD123", "CD33"]
MARROW = {
    "T cells": [4.65, 4.04, 3.48, 0.8, 0.5, 0.45, 0.9, 0.4],
    "B cells": [4.65, 4.04, 3.49, 0.8, 0.5, 2.98, 0.9, 0.4],
    "blasts": [4.78, 4.26, 2.6, 2.8, 2.6, 2.7, 2.2, 2.6],
    "basophils": [4.74, 4.17, 2.69, 0.87, 0.55, 0.48, 3.25, 2.24],
    "neutrophils": [4.95, 5.06, 2.88, 1.3, 0.8, 0.5, 1.25, 2.37],
    "eosinophils": [4.93, 5.18, 3.42, 2.2, 1.6, 0.8, 1.7, 2.3],
    "monocytes": [4.90, 4.65, 3.26, 1.1, 0.6, 2.86, 1.85, 3.39],
    "debris": [3.9, 3.65, 1.2, 1.1, 1.1, 1.0, 1.0, 1.0],
}


def normal(mean, sd, n, seed):
    """``n`` values drawn from a normal distribution, the same for the same seed."""
    return np.random.default_rng(seed).normal(mean, sd, n)


def write_lock(outdir, host, pid, workdir="/other/checkout", start=None):
    """An output-folder lock as a run on ``host`` with ``pid`` would leave it."""
    from cd125gate.io import outputlock

    outdir.mkdir(parents=True, exist_ok=True)
    lock = outdir / outputlock.LOCK_NAME
    lock.write_text(json.dumps({"host": host, "pid": pid, "start": start, "workdir": workdir}))
    return lock


def gone_pid():
    """A pid whose process no longer exists."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
