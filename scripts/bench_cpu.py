#!/usr/bin/env python3
"""Time `metal-mps bench --json` against onnxruntime on the test models and print a table.

Both run in this one process's turn, one after the other (never concurrently), with the same
input shapes and random non-zero inputs: onnxruntime on CPU with intra_op_num_threads=--threads
(2 by default) and metal-mps with as many (RAYON_NUM_THREADS),
the same number of warm-up runs (--warmup, or more: as many as fill --warmup-secs on onnxruntime;
on a virtual machine the first tens of runs of a fresh process are up to 2-3x slower), then the median of --iterations timed runs. The two alternate for --rounds
rounds, so that both see the same phases of a shared machine; the table gives the median over
rounds of each one's median and of the per-round ratio, the range of the ratios, and the ratio
of the two engines' fastest runs (what each does when the shared machine leaves it alone). Models are
taken from --models (built there with models/create_test_model.py when missing).

Models built by models/create_test_model.py: simple_cnn, resnet_block, resnet50, transformer_layer
(a BERT-base encoder layer, sequence 128), mlp; mobilenet_block. Exported by PyTorch, used when
present in --models (scripts/export_bench_models.py writes them): resnet50_tv, mobilenetv2_tv,
bert_base (sequence 128). The CPU's model and vector flags are printed first;
METAL_MPS_CPU_ISA=avx2 (or portable) caps the instruction set of metal-mps's kernels.

  python scripts/bench_cpu.py [--iterations 20] [--warmup 3] [--warmup-secs 0.3] [--rounds 5] [--device cpu|gpu]
                              [--threads 2] [--only NAME ...] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
CASES = [("simple_cnn", 4), ("resnet_block", 2), ("resnet50", 1), ("mobilenet_block", 2),
         ("transformer_layer", 2), ("mlp", 8), ("resnet50_tv", 1), ("mobilenetv2_tv", 1), ("bert_base", 1)]
EXPORTED = {"resnet50_tv", "mobilenetv2_tv", "bert_base"}
SEQ = 128
# Pause between the two engines: onnxruntime's pool spins for a while after a run, and those
# threads would take the cores from the next process's first runs.
SETTLE_S = 0.5


def cpu_summary() -> str:
    """The CPU's model name and the vector extensions the kernels choose between."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "amx_tile", "asimd", "asimddp", "sve"]
    cap = os.environ.get("METAL_MPS_CPU_ISA")
    return (f"CPU: {model}; {os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; flags: "
            f"{' '.join(f for f in wanted if f in flags) or 'none of interest'}"
            + (f"; METAL_MPS_CPU_ISA={cap}" if cap else ""))


def ensure_models(models: Path, names: list[str]) -> None:
    missing = [n for n in names if n not in EXPORTED and not (models / f"{n}.onnx").is_file()]
    if missing:
        subprocess.run([sys.executable, str(ROOT / "models" / "create_test_model.py"), str(models),
                        "--no-validate", "--only", *missing], check=True, stdout=subprocess.DEVNULL)


def ort_session(model: Path, batch: int, threads: int):
    """An onnxruntime CPU session and its random non-zero feeds (integers in 1..9, as
    `metal-mps bench` draws them; a dynamic first dim is the batch, any other one SEQ)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (batch if k == 0 else SEQ) for k, d in enumerate(i.shape)]
        if "int" in i.type:
            feeds[i.name] = rng.integers(1, 10, shape).astype(np.int64 if "int64" in i.type else np.int32)
        else:
            feeds[i.name] = (rng.uniform(0.1, 1.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    return sess, feeds


def symbolic_dims(model: Path) -> list[str]:
    """Names of the inputs' dynamic dims past the first (each is given SEQ)."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    return sorted({d.dim_param for i in m.graph.input for k, d in enumerate(i.type.tensor_type.shape.dim)
                   if k > 0 and d.dim_param})


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


def warmup_runs(sess, feeds, at_least: int, secs: float) -> int:
    """Untimed runs that take about `secs` seconds on onnxruntime, and at least `at_least`."""
    for _ in range(3):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        once = time.perf_counter() - t0
    return max(at_least, math.ceil(secs / max(once, 1e-6)))


def bench_ours(binary: str, model: Path, batch: int, iterations: int, warmup: int, device: str,
               threads: int, seq_dims: list[str]) -> dict:
    """The JSON object printed by `metal-mps bench --json` (`seq_dims` given SEQ)."""
    cmd = [binary, "bench", str(model), "--batch", str(batch), "--device", device,
           "--iterations", str(iterations), "--warmup", str(warmup), "--json"]
    for name in seq_dims:
        cmd += ["--dim", f"{name}={SEQ}"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON object in the output of {' '.join(cmd)}:\n{p.stdout}")
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (at least)")
    ap.add_argument("--warmup-secs", type=float, default=0.3,
                    help="more untimed runs first, as many as fill this many seconds, the same count for "
                         "both engines: on virtual machines the first runs of a fresh process are up to "
                         "2-3x slower for tens of runs")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of both")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device for metal-mps")
    ap.add_argument("--models", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--bin", default=os.environ.get("METAL_MPS_BIN", str(ROOT / "target" / "release" / "metal-mps")))
    ap.add_argument("--only", nargs="+", choices=[n for n, _ in CASES])
    ap.add_argument("--threads", type=int, default=2, help="threads of each engine")
    ap.add_argument("--batch", type=int, help="batch of every model instead of its own")
    args = ap.parse_args()

    print(cpu_summary(), file=sys.stderr)
    cases = [(n, args.batch or b) for n, b in CASES if not args.only or n in args.only]
    ensure_models(args.models, [n for n, _ in cases])
    missing = [n for n, _ in cases if n in EXPORTED and not (args.models / f"{n}.onnx").is_file()]
    if missing:
        print(f"skipped (not in {args.models}; see scripts/export_bench_models.py): {' '.join(missing)}",
              file=sys.stderr)
    cases = [(n, b) for n, b in cases if n not in missing]
    rows = []
    for name, batch in cases:
        model = args.models / f"{name}.onnx"
        sess, feeds = ort_session(model, batch, args.threads)
        seq_dims = symbolic_dims(model)
        warmup = warmup_runs(sess, feeds, args.warmup, args.warmup_secs)
        ort_ms, ours_ms, ratios, fastest = [], [], [], ([], [])
        for r in range(args.rounds):
            median_ms, min_ms = bench_ort(sess, feeds, args.iterations, warmup)
            time.sleep(SETTLE_S)
            ours = bench_ours(args.bin, model, batch, args.iterations, warmup, args.device, args.threads,
                              seq_dims)
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

    print(f"\n{cpu_summary()}\nonnxruntime {ort.__version__} CPU ({args.threads} threads) vs metal-mps "
          f"--device {args.device} ({args.threads} threads); "
          f"{args.rounds} alternating rounds, each the median of {args.iterations} runs after "
          f"at least {args.warmup} warm-up runs and {args.warmup_secs} s\n")
    print("| model | batch | ORT median (ms) | metal-mps median (ms) | ratio (ours/ORT), median of rounds "
          "| ratio range | ratio of the fastest runs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, batch, o, m, ratio, lo, hi, fast in rows:
        print(f"| {name} | {batch} | {o:.2f} | {m:.2f} | {ratio:.2f} | {lo:.2f}–{hi:.2f} | {fast:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
