#!/usr/bin/env bash
# The main job: builds metal-mps, writes the example model repository (the spec's Simple CNN
# and ResNet block, each with a config.pbtxt as the spec shows but KIND_MODEL) under
# build/example, and serves it with `metal-mps serve` on 127.0.0.1: HTTP 8000, gRPC 8001,
# metrics 8002. More `metal-mps serve` options may follow (e.g. --http-address 0.0.0.0).
#
#   bash scripts/serve.sh          # then, in another shell:
#   .venv/bin/python examples/test_client.py
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -r tests/server/requirements.txt
cargo build --release -p metal-mps-cli
repo=$(.venv/bin/python - <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "scripts/triton")
import serve  # the example repository shared with the Triton path
print(serve.write_example_repository(Path("build/example")))
PY
)
echo "model repository: $repo"
# The ports default to 8000 (HTTP), 8001 (gRPC) and 8002 (metrics), as Triton's do.
exec target/release/metal-mps serve --model-repository "$repo" "$@"
