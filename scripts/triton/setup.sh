#!/usr/bin/env bash
# Prepares the virtualenv the Triton scripts run in and prints its python: build/triton-venv
# (or $TRITON_VENV) with Triton from the PyPI wheel nvidia-pytriton==0.7.0, the clients and
# onnxruntime (requirements.txt + tests/triton/requirements.txt). The scripts it serves build
# the backend themselves (cargo build --release -p triton-metal-mps).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${TRITON_VENV:-$root/build/triton-venv}"
stamp="$venv/.requirements-installed"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
if [ ! -f "$stamp" ] || [ "$root/requirements.txt" -nt "$stamp" ] || [ "$root/tests/triton/requirements.txt" -nt "$stamp" ]; then
    "$venv/bin/pip" install -q -r "$root/requirements.txt" -r "$root/tests/triton/requirements.txt" >&2
    touch "$stamp"
fi
echo "$venv/bin/python"
