#!/usr/bin/env python3
"""Check `metal-mps run --device gpu` against onnxruntime on the CPU for the benchmark models of
scripts/bench_gpu.py (a device-machine companion of the benchmark: the timings say how fast, this
says the numbers are right). Inputs are random (image values in [-1, 1], token ids in 1..HIGH-1,
attention masks of ones); the error is the largest absolute difference over the largest reference
magnitude, printed per model, batch and precision, with FAIL past --tol (fp32) or 10x it (fp16);
fp16 is not judged where the reference's largest magnitude is below f16's normal range.

  python scripts/check_gpu_outputs.py --bin build/gpu-bench/metal-mps --models build/gpu-models \\
      [--only bert_base gpt2] [--batches 1 8] [--seq 128] [--high 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

# The smallest normal f16 (2^-14).
F16_TINY = float(np.finfo(np.float16).tiny)


def inputs(session: ort.InferenceSession, batch: int, seq: int, high: int, rng: np.random.Generator) -> dict:
    feeds = {}
    for i in session.get_inputs():
        shape = [batch if d == 0 else (s if isinstance(s, int) else seq) for d, s in enumerate(i.shape)]
        if "int64" in i.type:
            feeds[i.name] = (np.ones(shape, np.int64) if "mask" in i.name
                             else rng.integers(1, high, shape, dtype=np.int64))
        else:
            feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--only", nargs="+")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--high", type=int, default=1000, help="token ids are drawn from 1..HIGH-1")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    failed = 0
    for path in sorted(args.models.glob("*.onnx")):
        if args.only and path.stem not in args.only:
            continue
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in args.batches:
            feeds = inputs(session, batch, args.seq, args.high, rng)
            want = session.run(None, feeds)[0]
            with tempfile.TemporaryDirectory() as tmp:
                input_args = []
                for name, value in feeds.items():
                    np.save(f"{tmp}/in_{name}.npy", value)
                    input_args += ["--input", f"{name}={tmp}/in_{name}.npy"]
                for precision, tol in (("fp32", args.tol), ("fp16", 10 * args.tol)):
                    out = Path(tmp) / precision
                    out.mkdir()
                    cmd = [args.bin, "run", str(path), "--device", "gpu", "--precision", precision,
                           "--output-dir", str(out), *input_args]
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        print(f"{path.stem} b{batch} {precision}: FAIL, run exited {p.returncode}: {p.stderr[-500:]}")
                        failed += 1
                        continue
                    got = np.load(next(out.glob("*.npy"))).astype(np.float64)
                    scale = float(np.max(np.abs(want)))
                    if precision == "fp16" and scale < F16_TINY:
                        # Random weights can shrink a model's outputs below what f16 holds: any
                        # fp16 run returns zeros or subnormals there, whatever the kernels.
                        print(f"{path.stem} b{batch} fp16: not checkable, the outputs' largest "
                              f"magnitude {scale:.1e} is below f16's normal range ({F16_TINY:.1e})")
                        continue
                    err = float(np.max(np.abs(got - want)) / max(scale, 1e-30))
                    verdict = "ok" if err <= tol else "FAIL"
                    failed += verdict != "ok"
                    print(f"{path.stem} b{batch} {precision}: relative error {err:.2e} {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
