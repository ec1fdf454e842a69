#!/usr/bin/env bash
# perf_analyzer against Triton serving the Simple CNN through the metal_mps backend and,
# in the same server and run, through Triton's Python backend running onnxruntime.
# Arguments go to scripts/triton/bench.py (--help lists them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$("$here/setup.sh")"
exec "$python" "$here/bench.py" "$@"
