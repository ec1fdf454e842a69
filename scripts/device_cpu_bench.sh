#!/usr/bin/env bash
# The CPU benchmarks of docs/PERFORMANCE.md on a machine with many cores and no Rust (the lent
# H200 machine's 16-core host): build here, carry the binary, run this there.
#
#   cargo build --release -p metal-mps-cli && mkdir -p build/cpu-bench && cp target/release/metal-mps build/cpu-bench/
#   (there) bash scripts/device_cpu_bench.sh build/cpu-bench/metal-mps OUTDIR
#
# 1. Two threads each, pinned to two distinct physical cores: every model (ratio table), then the
#    same with METAL_MPS_CPU_ISA=avx2 (the AVX2 path on an AVX-512 machine).
# 2. Thread scaling 1, 2, 4, 8, 16 threads (all cores) on the exported ResNet-50, MobileNetV2 and
#    BERT-base at batch 1; then all cores at batch 16.
set -euo pipefail
BIN=${1:?binary}
OUT=${2:?output dir}
MODELS=${MODELS:-/tmp/bench-models}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$MODELS"
python3 models/create_test_model.py "$MODELS" --only simple_cnn resnet_block resnet50 mobilenet_block transformer_layer mlp >/dev/null
[ -f "$MODELS/bert_base.onnx" ] || python3 scripts/export_bench_models.py "$MODELS"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|L3" || true
# One logical CPU from each of the first two physical cores.
TWO=$(lscpu -p=CPU,CORE | grep -v '^#' | sort -t, -k2,2n -u | head -2 | cut -d, -f1 | paste -sd,)
ALL=$(nproc)
bench() { python3 scripts/bench_cpu.py --bin "$BIN" --models "$MODELS" "$@"; }
TWO_CORE_MODELS="simple_cnn resnet_block resnet50 mobilenet_block transformer_layer mlp resnet50_tv mobilenetv2_tv bert_base"
echo "== two threads on CPUs $TWO =="
taskset -c "$TWO" bash -c "$(declare -f bench); BIN=$BIN MODELS=$MODELS; bench --threads 2 --rounds 3 --iterations 20 --only $TWO_CORE_MODELS" 2>&1 | tee "$OUT/two_threads.txt"
echo "== two threads, METAL_MPS_CPU_ISA=avx2 =="
METAL_MPS_CPU_ISA=avx2 taskset -c "$TWO" bash -c "$(declare -f bench); BIN=$BIN MODELS=$MODELS; bench --threads 2 --rounds 2 --iterations 20 --only $TWO_CORE_MODELS" 2>&1 | tee "$OUT/two_threads_avx2.txt"
for t in 1 2 4 8 "$ALL"; do
    echo "== $t threads =="
    bench --threads "$t" --rounds 1 --iterations 10 --only resnet50_tv mobilenetv2_tv bert_base 2>&1 | tee "$OUT/threads_$t.txt"
done
echo "== $ALL threads, batch 16 =="
bench --threads "$ALL" --batch 16 --rounds 1 --iterations 5 --warmup 2 --only resnet50_tv mobilenetv2_tv bert_base 2>&1 | tee "$OUT/threads_${ALL}_b16.txt"
