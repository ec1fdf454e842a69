#!/usr/bin/env python3
"""Per-call overhead of `InferenceSession.run`: metal_mps against onnxruntime on a one-Add model.

Both sessions live in this process and are timed in alternation (a batch of calls of one, then a
batch of the other, repeated), so load from other processes hits both alike; the report gives the
median time per call of each and their ratio. Run it with a Python that has both packages:

    build/pyvenv/bin/python scripts/bench_python_overhead.py [--rounds 200] [--calls 200] [--max-ratio 1.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

import metal_mps


def add_model(n: int) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def measure(rounds: int, calls: int, elements: int = 16) -> dict:
    """Median microseconds per `run` call of each package, and metal_mps / onnxruntime."""
    model = add_model(elements)
    sessions = {
        "onnxruntime": onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]),
        "metal_mps": metal_mps.InferenceSession(model, providers=["CPUExecutionProvider"]),
    }
    feed = {"a": np.ones((1, elements), np.float32), "b": np.arange(elements, dtype=np.float32)[None]}
    for sess in sessions.values():
        np.testing.assert_array_equal(sess.run(None, feed)[0], feed["a"] + feed["b"])
        for _ in range(calls):
            sess.run(None, feed)
    per_call: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            run = sess.run
            start = time.perf_counter()
            for _ in range(calls):
                run(None, feed)
            per_call[name].append((time.perf_counter() - start) / calls * 1e6)
    med = {name: statistics.median(v) for name, v in per_call.items()}
    q = {name: statistics.quantiles(v, n=4) for name, v in per_call.items()}
    return {
        "median_us": {k: round(v, 2) for k, v in med.items()},
        "iqr_us": {k: [round(q[k][0], 2), round(q[k][2], 2)] for k in q},
        "ratio": round(med["metal_mps"] / med["onnxruntime"], 3),
        "rounds": rounds,
        "calls_per_round": calls,
        "versions": {"onnxruntime": onnxruntime.__version__, "metal_mps": metal_mps.__version__},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--calls", type=int, default=200, help="calls per timed batch")
    ap.add_argument("--max-ratio", type=float, help="exit 1 when metal_mps / onnxruntime exceeds this")
    args = ap.parse_args()
    result = measure(args.rounds, args.calls)
    print(json.dumps(result, indent=2))
    if args.max_ratio is not None and result["ratio"] > args.max_ratio:
        print(f"metal_mps's run takes {result['ratio']}x onnxruntime's (limit {args.max_ratio}x)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
