#!/usr/bin/env python3
"""perf_analyzer on the Simple CNN: metal_mps backend next to Triton's Python backend
running onnxruntime, in one server, in one run, at each concurrency.

Both models get the same configuration (max_batch_size 8, dynamic batching, one
instance) and both run the requests of one execute call as one batch. The two are
measured alternately for --rounds rounds (the order swapped each round); prints, per
concurrency, each one's median throughput and p50/p99 latency over the rounds, the
median of the per-round throughput ratios and their range; perf_analyzer's CSVs stay in
--workdir.

Run through scripts/triton/bench.sh, which prepares the virtualenv and builds the backend.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
from pathlib import Path

import triton_env as te

DIMS_IN, DIMS_OUT = [3, 224, 224], [16, 112, 112]
OUTPUT_ELEMENTS = 16 * 112 * 112
OURS, THEIRS = "simple_cnn_metal_mps", "simple_cnn_onnxruntime"


def write_repository(workdir: Path, engine: str) -> Path:
    onnx = te.generate_models(workdir / "onnx", ("simple_cnn",))["simple_cnn"]
    repo = workdir / "model_repository"
    shutil.rmtree(repo, ignore_errors=True)
    te.add_model(repo, OURS, onnx, te.config_pbtxt(OURS, DIMS_IN, DIMS_OUT, parameters={"engine": engine}))
    te.add_model(repo, THEIRS, onnx, te.config_pbtxt(THEIRS, DIMS_IN, DIMS_OUT, backend="python",
                                                     instance_groups=(("KIND_CPU", 1),)))
    shutil.copy2(Path(__file__).with_name("onnxruntime_model.py"), repo / THEIRS / "1" / "model.py")
    return repo


def perf(model: str, server: te.TritonServer, concurrency: int, args, out: Path) -> dict | None:
    """One perf_analyzer measurement, retried once with windows twice as long;
    None when neither attempt was stable."""
    binary, env = te.perf_analyzer()
    for interval_ms in (args.interval_ms, 2 * args.interval_ms):
        cmd = [
            str(binary), "-m", model, "-u", server.http_url, "-i", args.protocol, "-b", "1",
            "--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms),
            "--stability-percentage", str(args.stability), "--max-trials", "10", "-f", str(out),
        ]
        if args.shared_memory == "system":
            # Tensors travel through system shared memory instead of the HTTP/gRPC body.
            cmd += ["--shared-memory", "system",
                    "--output-shared-memory-size", str(4 * OUTPUT_ELEMENTS)]
        print("$", " ".join(cmd), flush=True)
        out.unlink(missing_ok=True)
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        with open(out) if out.exists() else open("/dev/null") as f:
            rows = list(csv.DictReader(f))
        if run.returncode == 0 and rows:
            return rows[0]
        print(f"  no stable measurement: {run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-300:]}",
              flush=True)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=te.REPO_ROOT / "build" / "triton-bench")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--interval-ms", type=int, default=5000, help="perf_analyzer measurement window")
    parser.add_argument("--stability", type=int, default=25,
                        help="perf_analyzer --stability-percentage: how far 3 windows may differ (2 shared cores are noisy)")
    parser.add_argument("--shared-memory", choices=["none", "system"], default="none",
                        help="how perf_analyzer passes tensors: in the request body, or through system shared memory")
    parser.add_argument("--engine", choices=["auto", "cpu", "gpu"], default="auto",
                        help="metal_mps engine (parameter 'engine'); auto: GPU when an adapter exists")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of the two models")
    args = parser.parse_args()

    repo = write_repository(args.workdir, args.engine)
    backend_dir = args.workdir / "backends"
    te.install_backend(te.build_backend(), backend_dir)
    te.install_python_backend(backend_dir)
    server = te.TritonServer(repo, backend_dir, env=te.python_backend_env(), log_path=args.workdir / "tritonserver.log")
    server.start(timeout=120, ready=True)
    # Per (model, concurrency): one perf_analyzer row per round (None when unstable).
    results: dict[tuple[str, int], list[dict | None]] = {(m, c): [] for m in (OURS, THEIRS) for c in args.concurrency}
    try:
        # Interleaved, so both backends see the same machine conditions.
        for r in range(args.rounds):
            for c in args.concurrency:
                for m in (OURS, THEIRS) if r % 2 == 0 else (THEIRS, OURS):
                    results[m, c].append(perf(m, server, c, args, args.workdir / f"{m}-c{c}-r{r + 1}.csv"))
    finally:
        server.stop()

    engine = next((line.split(": ")[-1].rstrip('"') for line in server.log_text().splitlines()
                   if f"of model '{OURS}'" in line and " engine" in line), "?")
    print(f"\nSimple CNN [1,3,224,224], {args.protocol}, shared memory: {args.shared_memory}, "
          f"perf_analyzer windows of {args.interval_ms} ms, {args.rounds} alternating rounds; "
          f"metal_mps instance: {engine}")
    print(f"{'concurrency':>11} | {'metal_mps infer/s':>17} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'onnxruntime infer/s':>19} {'p50 ms':>8} {'p99 ms':>8} | {'ratio (median of rounds, range)':>31}")
    for c in args.concurrency:
        cells = []
        for m in (OURS, THEIRS):
            rows = [row for row in results[m, c] if row is not None]
            if not rows:
                cells.append("unstable")
                continue
            throughput, p50, p99 = (statistics.median(float(row[key]) for row in rows)
                                    for key in ("Inferences/Second", "p50 latency", "p99 latency"))
            cells.append(f"{throughput:.1f} {p50 / 1e3:>8.2f} {p99 / 1e3:>8.2f}")
        ratios = [float(a["Inferences/Second"]) / float(b["Inferences/Second"])
                  for a, b in zip(results[OURS, c], results[THEIRS, c]) if a is not None and b is not None]
        ratio = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "n/a")
        print(f"{c:>11} | {cells[0]:>35} | {cells[1]:>37} | {ratio:>31}")


if __name__ == "__main__":
    main()
