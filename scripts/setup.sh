#!/usr/bin/env bash
# Creates .venv and installs the project with everything the tests and the LIBERO
# harness need. torch comes first, pinned, so that pip never resolves a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
# The robot-side client package first: the project depends on it and no index holds it.
.venv/bin/pip install --quiet --disable-pip-version-check -e clients/python
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[libero,dev]"
