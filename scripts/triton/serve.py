#!/usr/bin/env python3
"""Writes the example model repository and runs Triton on it in the foreground.

The repository (default build/triton/model_repository) holds the spec's two test
models, each with a config.pbtxt in the spec's layout but `KIND_MODEL` (GPU engine
when an adapter exists, else CPU):

  simple_cnn    input [batch, 3, 224, 224] -> output [batch, 16, 112, 112]
  resnet_block  input [batch, 64, 56, 56]  -> output [batch, 64, 56, 56]

Run through scripts/triton/serve.sh, which prepares the virtualenv and builds the backend.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import triton_env as te

MODELS = {
    "simple_cnn": ([3, 224, 224], [16, 112, 112]),
    "resnet_block": ([64, 56, 56], [64, 56, 56]),
}


def write_example_repository(workdir: Path) -> Path:
    """Generates the ONNX models and writes `<workdir>/model_repository`; returns it."""
    onnx_files = te.generate_models(workdir / "onnx", tuple(MODELS))
    repo = workdir / "model_repository"
    for name, (input_dims, output_dims) in MODELS.items():
        te.add_model(repo, name, onnx_files[name], te.config_pbtxt(name, input_dims, output_dims))
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=te.REPO_ROOT / "build" / "triton")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("tritonserver_args", nargs="*", help="more tritonserver options, after --")
    args = parser.parse_args()

    repo = write_example_repository(args.workdir)
    backend_dir = args.workdir / "backends"
    te.install_backend(te.build_backend(), backend_dir)
    server = te.TritonServer(repo, backend_dir, ports=(args.http_port, args.grpc_port, args.metrics_port),
                             args=tuple(args.tritonserver_args), address=args.address)
    cmd = server.command()
    print(f"model repository: {repo}\nbackend: {backend_dir / te.BACKEND_NAME / te.BACKEND_LIB}\n$ {' '.join(cmd)}", flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
