"""The SLURM profile against a real single-node cluster (tools/hpc/start-local-slurm).

Runs as root on Debian (as CI does); elsewhere the cluster cannot be started and
the test is skipped.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import snakemake_command, write_subset_sheet

ROOT = Path(__file__).parents[1]
HPC = ROOT / "tools/hpc"
SUBSET = ("low_fmo", "high_fmo", "low_nocontrol", "corrupt")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A local SLURM cluster for the session; yields its state folder (logs in STATE/log)."""
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists() or not shutil.which("apt-get"):
        pytest.skip("the local SLURM cluster needs root on Debian with apt")
    state = tmp_path_factory.mktemp("slurm") / "state"
    subprocess.run([str(HPC / "start-local-slurm"), str(state)], check=True, timeout=600)
    yield state
    subprocess.run([str(HPC / "stop-local-slurm"), str(state), "--purge"], timeout=120)


def run(workdir, sheet, *extra, timeout):
    command = ["timeout", "-k", "30", str(timeout),
               *snakemake_command(workdir, sheet, workdir / "results", "analyze_chunk=2", *extra)]
    # timeout -k: a stuck status query makes Snakemake ignore SIGTERM (tools/hpc/README.md).
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout + 60)


def test_workflow_runs_through_slurm_like_locally(slurm_cluster, tmp_path):
    sheet = write_subset_sheet(tmp_path / "samples.tsv", SUBSET)
    local = run(tmp_path / "local", sheet, timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]

    cluster = run(tmp_path / "slurm", sheet, "--profile", str(ROOT / "workflow/profiles/slurm"),
                  # two chunks of two samples, one SLURM job each: more than one SLURM job
                  "--group-components", "analyze=1", timeout=900)
    assert cluster.returncode == 0, cluster.stderr[-3000:]

    job_ids = set()
    for sample_id in SUBSET:
        log = (tmp_path / "slurm/results/logs/analyze" / f"{sample_id}.log").read_text()
        match = re.match(r"slurm_job_id=(\d+)\n", log)
        assert match, (sample_id, log[:200])
        job_ids.add(match.group(1))
    assert len(job_ids) == 2  # the samples went in two chunk jobs
    completed = re.findall(r"JobId=(\d+) .*JobState=COMPLETED",
                           (slurm_cluster / "log/jobcomp.log").read_text())
    assert job_ids <= set(completed)

    for name in ("screening.tsv", "screening.json"):
        assert (tmp_path / "slurm/results" / name).read_bytes() == \
               (tmp_path / "local/results" / name).read_bytes(), name
    assert (tmp_path / "slurm/results/report.html").stat().st_size > 0
