#!/usr/bin/env bash
# Builds the metal_mps backend, installs Triton (PyPI nvidia-pytriton==0.7.0) into
# build/triton-venv, writes the example model repository (Simple CNN and ResNet block,
# KIND_MODEL) under build/triton, and serves it on localhost: HTTP 8000, gRPC 8001,
# metrics 8002. Arguments go to scripts/triton/serve.py (--help lists them).
#
#   scripts/triton/serve.sh                 # then, in another shell:
#   build/triton-venv/bin/python examples/test_client.py
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$("$here/setup.sh")"
exec "$python" "$here/serve.py" "$@"
