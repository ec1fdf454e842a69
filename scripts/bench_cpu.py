#!/usr/bin/env python3
"""Time `metal-mps bench --json` against onnxruntime on the test models and print a table.

Both run in this one process's turn, one after the other (never concurrently), with the same
input shapes and random non-zero inputs: onnxruntime on CPU with intra_op_num_threads=2,
warm-up runs, then the median of --iterations timed runs. The two alternate for --rounds
rounds, so that both see the same phases of a shared machine; the table gives the median over
rounds of each one's median and of the per-round ratio, the range of the ratios, and the ratio
of the two engines' fastest runs (what each does when the shared machine leaves it alone). Models are
taken from --models (built there with models/create_test_model.py when missing).

  python scripts/bench_cpu.py [--iterations 20] [--warmup 3] [--rounds 5] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
CASES = [("simple_cnn", 4), ("resnet_block", 2), ("resnet50", 1), ("mobilenet_block", 2)]


def ensure_models(models: Path, names: list[str]) -> None:
    missing = [n for n in names if not (models / f"{n}.onnx").is_file()]
    if missing:
        subprocess.run([sys.executable, str(ROOT / "models" / "create_test_model.py"), str(models),
                        "--no-validate", "--only", *missing], check=True, stdout=subprocess.DEVNULL)


def ort_session(model: Path, batch: int):
    """An onnxruntime CPU session (2 intra-op threads) and its random non-zero feeds."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        feeds[i.name] = (rng.uniform(0.1, 1.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    return sess, feeds


def bench_ort(sess, feeds, iterations: int, warmup: int) -> tuple[float, float]:
    """Median and minimum milliseconds of `sess` on `feeds`."""
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def bench_ours(binary: str, model: Path, batch: int, iterations: int, warmup: int, device: str) -> dict:
    """The JSON object printed by `metal-mps bench --json`."""
    cmd = [binary, "bench", str(model), "--batch", str(batch), "--device", device,
           "--iterations", str(iterations), "--warmup", str(warmup), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON object in the output of {' '.join(cmd)}:\n{p.stdout}")
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of both")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device for metal-mps")
    ap.add_argument("--models", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--bin", default=os.environ.get("METAL_MPS_BIN", str(ROOT / "target" / "release" / "metal-mps")))
    ap.add_argument("--only", nargs="+", choices=[n for n, _ in CASES])
    args = ap.parse_args()

    cases = [(n, b) for n, b in CASES if not args.only or n in args.only]
    ensure_models(args.models, [n for n, _ in cases])
    rows = []
    for name, batch in cases:
        model = args.models / f"{name}.onnx"
        sess, feeds = ort_session(model, batch)
        ort_ms, ours_ms, ratios, fastest = [], [], [], ([], [])
        for r in range(args.rounds):
            median_ms, min_ms = bench_ort(sess, feeds, args.iterations, args.warmup)
            ours = bench_ours(args.bin, model, batch, args.iterations, args.warmup, args.device)
            ort_ms.append(median_ms)
            ours_ms.append(ours["median_ms"])
            fastest[0].append(min_ms)
            fastest[1].append(ours["min_ms"])
            ratios.append(ours_ms[-1] / ort_ms[-1])
            print(f"{name} b{batch} round {r + 1}: ORT {ort_ms[-1]:.2f} ms, metal-mps ({args.device}) "
                  f"{ours_ms[-1]:.2f} ms, ratio {ratios[-1]:.2f}", file=sys.stderr)
        med = statistics.median
        rows.append((name, batch, med(ort_ms), med(ours_ms), med(ratios), min(ratios), max(ratios),
                     min(fastest[1]) / min(fastest[0])))

    print(f"\nonnxruntime {ort.__version__} CPU (2 threads) vs metal-mps --device {args.device}; "
          f"{args.rounds} alternating rounds, each the median of {args.iterations} runs after "
          f"{args.warmup} warm-up\n")
    print("| model | batch | ORT median (ms) | metal-mps median (ms) | ratio (ours/ORT), median of rounds "
          "| ratio range | ratio of the fastest runs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, batch, o, m, ratio, lo, hi, fast in rows:
        print(f"| {name} | {batch} | {o:.2f} | {m:.2f} | {ratio:.2f} | {lo:.2f}–{hi:.2f} | {fast:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
