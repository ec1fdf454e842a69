#!/usr/bin/env python3
"""Sends an image-shaped request to a model served by Triton through the metal_mps
backend, over HTTP and over gRPC, and prints the largest outputs.

Start the server first (scripts/triton/serve.sh), then:

  build/triton-venv/bin/python examples/test_client.py
  build/triton-venv/bin/python examples/test_client.py --model resnet_block --batch 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def synthetic_image(batch: int, dims: list[int], seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise, normalized like an ImageNet input."""
    rng = np.random.default_rng(seed)
    c, h, w = dims
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = np.stack([(xx + yy + k / c) % 1.0 for k in range(c)])
    x = base[None] + 0.1 * rng.standard_normal((batch, c, h, w))
    return ((x - 0.45) / 0.225).astype(np.float32)


def top(values: np.ndarray, k: int) -> list[tuple[tuple[int, ...], float]]:
    """The `k` largest entries of one batch item, with their indices."""
    flat = values.ravel()
    idx = np.argpartition(flat, -k)[-k:]
    idx = idx[np.argsort(flat[idx])[::-1]]
    return [(tuple(int(i) for i in np.unravel_index(j, values.shape)), float(flat[j])) for j in idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--http-url", default="localhost:8000")
    parser.add_argument("--grpc-url", default="localhost:8001")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()

    http = httpclient.InferenceServerClient(args.http_url)
    grpc = grpcclient.InferenceServerClient(args.grpc_url)
    meta = http.get_model_metadata(args.model)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    dims = [int(d) for d in inp["shape"][1:]]  # the first dimension is the batch
    print(f"model {args.model}: input {inp['name']} {inp['datatype']} {inp['shape']}, output {out['name']} {out['shape']}")
    x = synthetic_image(args.batch, dims)

    results = {}
    for proto, client, module in (("HTTP", http, httpclient), ("gRPC", grpc, grpcclient)):
        tensor = module.InferInput(inp["name"], list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        start = time.perf_counter()
        response = client.infer(args.model, [tensor], outputs=[module.InferRequestedOutput(out["name"])])
        elapsed = (time.perf_counter() - start) * 1e3
        y = response.as_numpy(out["name"])
        results[proto] = y
        print(f"\n{proto}: output {list(y.shape)} in {elapsed:.1f} ms")
        for b in range(y.shape[0]):
            print(f"  item {b}: top {args.top} (index, value):")
            for index, value in top(y[b], args.top):
                print(f"    {index}  {value:.5f}")
    diff = float(np.abs(results["HTTP"] - results["gRPC"]).max())
    print(f"\nHTTP and gRPC outputs differ by at most {diff:.3g}")
    http.close()
    grpc.close()


if __name__ == "__main__":
    main()
