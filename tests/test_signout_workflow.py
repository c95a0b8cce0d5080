"""The sign-out loop in the workflow: reviews checked before any job, final status, audit, re-gating."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DIGEST = "ab" * 32


def snakemake(workdir, samples, outdir, *config, extra=(), timeout=900):
    command = [str(SNAKEMAKE), "--snakefile", str(ROOT / "workflow/Snakefile"), "--directory", str(workdir),
               "--configfile", str(ROOT / "config/config.yaml"),
               "--config", f"samples={samples}", f"outdir={outdir}", *config, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc):
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cd125gate:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


@pytest.mark.parametrize("line, problem", [
    (f"nosuch\t{DIGEST}\tACCEPT\tDr Ada\t2026-11-30\t", "line 2: unknown sample 'nosuch'"),
    (f"low_fmo\t{DIGEST}\tOVERRIDE_MET\tDr Ada\t2026-11-30\t", "line 2: OVERRIDE_MET of sample 'low_fmo' gives no reason"),
    (f"low_fmo\t{DIGEST}\tSIGN\tDr Ada\t2026-11-30\tok", "line 2: unknown decision 'SIGN'"),
    (f"low_fmo\t{DIGEST}\tACCEPT\tDr Ada\t30.11.2026\t", "line 2: date '30.11.2026'"),
    (f"low_fmo\t{DIGEST}\tACCEPT\tDr Ada\t2026-11-30\t", "line 2: sample 'low_fmo' has no result.json yet"),
])
def test_a_bad_review_line_stops_the_run_before_any_job(tmp_path, line, problem):
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("sample_id\tresult_sha256\tdecision\treviewer\tdate\treason\n" + line + "\n")
    proc = snakemake(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out", f"reviews={reviews}")
    assert proc.returncode != 0
    assert one_error_line(proc).startswith(f"cd125gate: {reviews}: {problem}")
    assert not (tmp_path / "out").exists()


def test_signoff_must_be_known(tmp_path):
    proc = snakemake(tmp_path, ROOT / "config/samples.tsv", tmp_path / "out", "signoff=some")
    assert proc.returncode != 0 and "signoff" in proc.stderr
    assert not (tmp_path / "out").exists()
