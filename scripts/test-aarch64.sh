#!/usr/bin/env bash
# The CPU engine on AArch64 (issue #11), from an x86-64 Linux machine:
#  1. cross-builds the CPU engine's tests for aarch64-unknown-linux-gnu and runs them under
#     qemu-user: the kernels (NEON micro-kernel and pool against plain references), the
#     operators, the ONNX importer's control-flow models, the model API and a short slice of
#     the model fuzzer (every test that runs models on the CPU engine without a GPU, Python
#     or generated files);
#  2. type-checks the whole workspace for aarch64-apple-darwin (nothing links without Apple's
#     SDK; clang assembles the one assembly file of a dependency, psm's, for Darwin).
# Installs what it lacks (Debian packages when run as root, rustup targets); safe to rerun.
# Builds go to target/aarch64 and target/darwin-check, apart from the host's.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

PKGS=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang-15)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    step "apt: ${missing[*]}"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing packages: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "rustup targets: aarch64-unknown-linux-gnu aarch64-apple-darwin"
# For the toolchain rust-toolchain.toml pins; a no-op when they are installed.
rustup target add aarch64-unknown-linux-gnu aarch64-apple-darwin

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CC_aarch64_apple_darwin=clang-15
# The fuzzer's slice under emulation (test-all.sh gives it 60 s natively).
export METAL_MPS_FUZZ_SECS=${METAL_MPS_AARCH64_FUZZ_SECS:-5}

step "cargo test (aarch64-unknown-linux-gnu, under qemu-aarch64): CPU engine, operators, models"
cargo test --profile cross-test --target aarch64-unknown-linux-gnu --target-dir target/aarch64 \
    -p metal-mps-cpu -p metal-mps-ops -p metal-mps-onnx -p metal-mps --lib --tests

step "cargo check --target aarch64-apple-darwin --workspace"
cargo check --target aarch64-apple-darwin --workspace --target-dir target/darwin-check

step "aarch64: all passed"
