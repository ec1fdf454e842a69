#!/usr/bin/env bash
# The full test run (the README's test command): release build, Rust tests, generated test
# models and ONNX cases (under build/), the conformance manifests (CPU; GPU when the GPU
# manifest lists cases and a Vulkan adapter answers), then the Python CLI tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

# The Python test requirements go into .venv, as scripts/serve.sh does: this command works on a
# fresh clone by itself (system packages: see .ci/run, which installs them on Debian).
step "python venv (.venv): test requirements"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt \
    -r tests/server/requirements.txt -r tests/triton/requirements.txt
PY=.venv/bin/python
BIN=${METAL_MPS_BIN:-target/release/metal-mps}
export METAL_MPS_BIN=$BIN
# Mesa (lavapipe) wants a private runtime dir; one 0700 temp dir for every step.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR=$(mktemp -d)
    chmod 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
    trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT
fi

step "cargo build --release --workspace"
cargo build --release --workspace

step "generate test models (build/models) and ONNX cases (build/onnx-cases)"
"$PY" models/create_test_model.py build/models
"$PY" scripts/gen_onnx_cases.py -q build/onnx-cases

step "cargo test --release --workspace"
# Same profile as the build above, so dependencies are not compiled a second time. The GPU
# engine's model tests need build/models and an adapter (lavapipe in CI): fail, never skip.
if [ "${CI:-}" = "true" ]; then
    export METAL_MPS_REQUIRE_MODELS=1 METAL_MPS_REQUIRE_GPU=1
fi
# The model fuzzer (crates/runtime/tests/fuzz_models.rs) runs inside it for a bounded slice:
# METAL_MPS_FUZZ_SECS seconds of mutated models (5 when unset; set it higher to fuzz longer).
export METAL_MPS_FUZZ_SECS=${METAL_MPS_FUZZ_SECS:-60}
cargo test --release --workspace

step "conformance: cpu"
"$PY" scripts/conformance.py --device cpu

step "conformance: gpu"
if ! grep -qvE '^[[:space:]]*(#|$)' tests/conformance/manifest-gpu.txt 2>/dev/null; then
    echo "skipped: tests/conformance/manifest-gpu.txt lists no cases"
else
    rm -rf build/gpu-probe
    "$PY" -c "import numpy as np; np.save('build/gpu-probe.npy', np.ones((1, 4), np.float32))"
    # Skip only when the GPU engine reports no adapter; any other failure runs (and fails) below.
    probe=$("$BIN" run build/models/tiny.onnx --input input=build/gpu-probe.npy \
        --output-dir build/gpu-probe --device gpu 2>&1) || true
    if grep -qi "adapter" <<<"$probe" && ! [ -f build/gpu-probe/output.npy ]; then
        echo "skipped: no Vulkan adapter ($(tail -n 1 <<<"$probe"))"
    else
        "$PY" scripts/conformance.py --device gpu
    fi
fi

step "pytest tests/python (CLI: models vs onnxruntime, bad input)"
"$PY" -m pytest tests/python -q

step "python package: wheel (maturin) into a fresh venv, pytest tests/python_pkg"
# The wheel is built with the workspace's target dir and release profile, so only the PyO3
# crate compiles here; it goes into a fresh venv with the test requirements, nothing else.
"$PY" -m pip install -q --disable-pip-version-check -r crates/python/requirements.txt
rm -rf build/wheels build/pyvenv
"$PY" -m maturin build --release -m crates/python/Cargo.toml --target-dir target -o build/wheels
python3 -m venv build/pyvenv
build/pyvenv/bin/pip install -q --disable-pip-version-check -r requirements.txt build/wheels/metal_mps-*.whl
# The onnx backend test runner through metal_mps.backend prints its count beside the CLI's.
build/pyvenv/bin/python -m pytest tests/python_pkg -q -s -p no:cacheprovider

step "pytest tests/server (metal-mps serve, real Triton clients, 60 s of request fuzzing)"
# The request fuzzer runs a bounded slice here; run tests/server/fuzz_requests.py for hours.
METAL_MPS_FUZZ_SECONDS=${METAL_MPS_FUZZ_SECONDS:-60} "$PY" -m pytest tests/server -q

step "pytest tests/triton (real tritonserver 2.51 loading libtriton_metal_mps.so)"
"$PY" -m pytest tests/triton -q

step "all tests passed"
