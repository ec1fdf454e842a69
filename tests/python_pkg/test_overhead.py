"""The per-call overhead of `run` on a one-Add model is within 1.5x of onnxruntime's (both timed
in alternation in this process: scripts/bench_python_overhead.py)."""

from __future__ import annotations

import importlib.util

from conftest import ROOT


def test_run_overhead_within_one_and_a_half_times_onnxruntime():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench_python_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure(rounds=40, calls=100)
    print(f"\nrun per call: {result['median_us']} µs, ratio {result['ratio']}")
    assert result["ratio"] <= 1.5, result
