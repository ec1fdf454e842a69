#!/usr/bin/env python3
"""perf_analyzer against `metal-mps serve` and against real Triton (tritonserver 2.51
from nvidia-pytriton) running the metal_mps backend, on the same model repository.

The repository (default build/bench-serve/model_repository) holds two models, both
`backend: "metal_mps"`, max_batch_size 8, `dynamic_batching {}`, one KIND_MODEL instance
(GPU engine when an adapter exists, else CPU):

  simple_cnn  input [batch, 3, 224, 224] -> output [batch, 16, 112, 112]
  tiny        input [batch, 4] -> Add(constant) -> [batch, 4]   (protocol overhead)

The servers run one at a time on free loopback ports: `metal-mps serve` is started,
measured (every model x protocol x concurrency), stopped; then tritonserver likewise.
Each measurement is perf_analyzer, batch 1, `--input-data random`, time windows of
--interval-ms, at most --max-trials windows, until 3 consecutive windows agree within
--stability percent (a failed measurement is retried once with windows twice as long,
then reported as "unstable"). Prints a markdown table; perf_analyzer's CSVs and both
servers' logs stay in --workdir.

  .venv/bin/python scripts/bench_serve.py [--concurrency 1 4 8] [--interval-ms 2000]

Environment: METAL_MPS_BIN (default target/release/metal-mps),
METAL_MPS_TRITON_BACKEND (default target/release/libtriton_metal_mps.so). Nothing is built.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "triton"))
import triton_env as te  # noqa: E402

MODELS = {"simple_cnn": ([3, 224, 224], [16, 112, 112]), "tiny": ([4], [4])}
PROTOCOLS = ("http", "grpc")


def write_repository(workdir: Path) -> Path:
    onnx = te.generate_models(workdir / "onnx", tuple(MODELS))
    repo = workdir / "model_repository"
    shutil.rmtree(repo, ignore_errors=True)
    for name, (dims_in, dims_out) in MODELS.items():
        te.add_model(repo, name, onnx[name], te.config_pbtxt(name, dims_in, dims_out))
    return repo


class MetalMpsServe:
    """`metal-mps serve` on loopback, same shape as te.TritonServer (http_url, grpc_url, stop)."""

    def __init__(self, binary: Path, repo: Path, log_path: Path):
        self.binary, self.repo, self.log_path = binary, repo, log_path
        self.http_port, self.grpc_port, self.metrics_port = te.free_ports(3)
        self.http_url, self.grpc_url = f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "MetalMpsServe":
        cmd = [str(self.binary), "serve", "--model-repository", str(self.repo),
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
               "--metrics-port", str(self.metrics_port)]
        print("$", " ".join(cmd), flush=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        te.wait_for_health(self, "metal-mps serve", "ready", timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def perf(server, model: str, protocol: str, concurrency: int, args, out: Path) -> dict | None:
    """One perf_analyzer measurement (CSV row as a dict), or None when it never stabilized."""
    binary, env = te.perf_analyzer()
    url = server.http_url if protocol == "http" else server.grpc_url
    for interval_ms in (args.interval_ms, 2 * args.interval_ms):
        cmd = [str(binary), "-m", model, "-u", url, "-i", protocol, "-b", "1",
               "--concurrency-range", str(concurrency), "--input-data", "random",
               "--measurement-mode", "time_windows", "--measurement-interval", str(interval_ms),
               "--stability-percentage", str(args.stability), "--max-trials", str(args.max_trials),
               "-f", str(out)]
        out.unlink(missing_ok=True)
        t0 = time.monotonic()
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        rows = []
        if out.exists():
            with open(out) as f:
                rows = list(csv.DictReader(f))
        if run.returncode == 0 and rows:
            r = rows[0]
            print(f"  {model:<10} {protocol:<4} c={concurrency}: {float(r['Inferences/Second']):8.1f} infer/s "
                  f"p50 {int(r['p50 latency']) / 1e3:.2f} ms p99 {int(r['p99 latency']) / 1e3:.2f} ms "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
            return r
        tail = (run.stdout.strip().splitlines() or [run.stderr[-300:]])[-1]
        print(f"  {model} {protocol} c={concurrency} @ {interval_ms} ms: no stable measurement: {tail}", flush=True)
    return None


def measure(server, args, label: str) -> dict:
    results = {}
    for model in MODELS:
        for protocol in PROTOCOLS:
            for c in args.concurrency:
                results[model, protocol, c] = perf(server, model, protocol, c, args,
                                                   args.workdir / f"{label}-{model}-{protocol}-c{c}.csv")
    return results


def cell(r: dict | None) -> str:
    if r is None:
        return "unstable | – | –"
    return f"{float(r['Inferences/Second']):.1f} | {int(r['p50 latency']) / 1e3:.2f} | {int(r['p99 latency']) / 1e3:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=te.REPO_ROOT / "build" / "bench-serve")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer measurement window")
    parser.add_argument("--max-trials", type=int, default=6, help="perf_analyzer -r: windows before giving up")
    parser.add_argument("--stability", type=int, default=25,
                        help="perf_analyzer -s: how far 3 windows may differ, percent (2 shared cores are noisy)")
    parser.add_argument("--skip", choices=["serve", "triton"], help="measure only the other server")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    serve_bin = Path(os.environ.get("METAL_MPS_BIN", te.REPO_ROOT / "target" / "release" / "metal-mps"))
    backend_lib = Path(os.environ.get("METAL_MPS_TRITON_BACKEND",
                                      te.REPO_ROOT / "target" / "release" / te.BACKEND_LIB))
    repo = write_repository(args.workdir)
    t_start = time.monotonic()

    serve_results: dict = {}
    if args.skip != "serve":
        print("== metal-mps serve", flush=True)
        serve = MetalMpsServe(serve_bin, repo, args.workdir / "metal-mps-serve.log").start()
        try:
            serve_results = measure(serve, args, "serve")
        finally:
            serve.stop()

    triton_results: dict = {}
    if args.skip != "triton":
        backend_dir = args.workdir / "backends"
        te.install_backend(backend_lib, backend_dir)
        triton = te.TritonServer(repo, backend_dir, log_path=args.workdir / "tritonserver.log")
        print("== tritonserver + metal_mps backend\n$", " ".join(triton.command()), flush=True)
        triton.start(timeout=120, ready=True)
        try:
            triton_results = measure(triton, args, "triton")
        finally:
            triton.stop()

    print(f"\nperf_analyzer batch 1, --input-data random, time windows of {args.interval_ms} ms "
          f"(<= {args.max_trials} trials, stability {args.stability} %); total {time.monotonic() - t_start:.0f} s\n")
    print("| model | protocol | concurrency | serve infer/s | serve p50 ms | serve p99 ms "
          "| Triton infer/s | Triton p50 ms | Triton p99 ms | ratio serve/Triton |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in MODELS:
        for protocol in PROTOCOLS:
            for c in args.concurrency:
                s, t = serve_results.get((model, protocol, c)), triton_results.get((model, protocol, c))
                ratio = (f"{float(s['Inferences/Second']) / float(t['Inferences/Second']):.2f}"
                         if s and t else "–")
                print(f"| {model} | {protocol} | {c} | {cell(s)} | {cell(t)} | {ratio} |")


if __name__ == "__main__":
    main()
