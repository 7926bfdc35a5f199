#!/usr/bin/env bash
# First-run check of a GPU machine, at most a few minutes, results as JSON:
#   bash scripts/gpu_check.sh --out gpu_check.json          # one CUDA GPU, 7B preset, bf16
#   bash scripts/gpu_check.sh --cpu --out cpu_check.json    # reduced mode (tiny preset), as CI runs it
# Options are those of cogvla/gpu_check.py (--iters N). Uses .venv when it exists.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${root}/.venv/bin/python"
[[ -x "${python}" ]] || python="$(command -v python3)"
cd "${root}"
exec "${python}" -m cogvla.gpu_check "$@"
