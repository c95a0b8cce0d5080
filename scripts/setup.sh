#!/usr/bin/env bash
# Set up cd125gate in ./.venv (idempotent). With --test, also install the test
# extra and the system packages the test suite drives (Chromium for the
# review-page test; the SLURM test installs its own packages via tools/hpc).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
extra=""
if [ "${1:-}" = "--test" ]; then
    extra="[test]"
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian chromium for the review-page browser test" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
fi
.venv/bin/python -m pip install --quiet -e ".${extra}"
# An editable install leaves the package's bytecode to be written on first import, which
# PYTHONDONTWRITEBYTECODE (set in some containers) forbids: every command would compile
# the ~95 modules again (~0.1 s per process, per Snakemake job). Written once here instead,
# as pip does for a regular install; Python recompiles any module edited since.
.venv/bin/python -m compileall -q src/cd125gate
