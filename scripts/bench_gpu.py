#!/usr/bin/env python3
"""Time `metal-mps bench --device gpu` against PyTorch eager on the same GPU, in one process's turn.

For each model and batch: metal-mps (fp32, and `--precision fp16`) with host tensors in and out,
then PyTorch eager on CUDA (fp32 with its defaults, i.e. cuDNN may use TF32 for convolutions; and
the model in fp16), timed two ways: wall clock including the input's copy to the GPU and the
output's copy back (what metal-mps's run does) and CUDA events with the input already there.
Medians of --iterations runs after --warmup. The ratio is metal-mps over PyTorch's host in/out
time (below 1: metal-mps is faster). The last columns are metal-mps's model load time in that process
(parse, optimize; for models with fixed shapes also plan and compile) and its first run (for
dynamic shapes: plan, compile the pipelines, GPU autotune, then the run; the first row of a model
also pays the driver's shader compilation, later rows may find it in the driver's own disk cache
and our pipeline and autotune caches).

Models (random weights, nothing downloaded), exported to --models with the TorchScript exporter
(opset 17, dynamic batch; GPT-2 with the dynamo exporter, opset 18) when missing: torchvision resnet18, resnet50, mobilenet_v2,
efficientnet_b0 (input [batch,3,224,224]); transformers bert_base and gpt2 (input ids [batch,128];
BERT also an attention mask). Needs torch, torchvision, transformers and a CUDA GPU (the H200
machine has them).

  python scripts/bench_gpu.py --bin target/release/metal-mps [--only resnet50 ...]
                              [--batches 1 32] [--iterations 30] [--warmup 5]
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

import torch
import torchvision

SEQ = 128
CNNS = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50,
        "mobilenet_v2": torchvision.models.mobilenet_v2, "efficientnet_b0": torchvision.models.efficientnet_b0}
TRANSFORMERS = ("bert_base", "gpt2")


class Bert(torch.nn.Module):
    """BERT-base returning the last hidden state."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.m = BertModel(BertConfig(attn_implementation="eager"))

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Gpt2(torch.nn.Module):
    """GPT-2 small returning the last hidden state (no key/value cache)."""

    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        self.m = GPT2Model(GPT2Config(attn_implementation="eager", use_cache=False))

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False).last_hidden_state


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in CNNS:
        return CNNS[name](weights=None).eval()
    return (Bert() if name == "bert_base" else Gpt2()).eval()


def inputs(name: str, batch: int) -> tuple:
    g = torch.Generator().manual_seed(1)
    if name in CNNS:
        return (torch.rand(batch, 3, 224, 224, generator=g) * 2 - 1,)
    ids = torch.randint(1, 1000, (batch, SEQ), generator=g)
    return (ids, torch.ones(batch, SEQ, dtype=torch.int64)) if name == "bert_base" else (ids,)


def export(name: str, path: Path) -> None:
    model = build(name)
    args = inputs(name, 2)
    names = ["x"] if name in CNNS else (["input_ids", "attention_mask"] if name == "bert_base" else ["input_ids"])
    if name == "gpt2":
        # transformers 5's causal mask uses aten::diff, which the TorchScript exporter lacks.
        from torch.export import Dim

        dims = {0: Dim("batch", min=1, max=64), 1: Dim("seq", min=2, max=1024)}
        with torch.no_grad():
            prog = torch.onnx.export(model, args, dynamo=True, opset_version=18, input_names=names,
                                     output_names=["y"], dynamic_shapes=(dims,), external_data=False)
        prog.save(str(path))
        return
    dynamic = {n: {0: "batch", **({} if name in CNNS else {1: "seq"})} for n in names}
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["y"], opset_version=17,
                          dynamic_axes=dynamic, dynamo=False)


def ours(binary: str, model: Path, name: str, batch: int, precision: str, iterations: int, warmup: int) -> dict:
    cmd = [binary, "bench", str(model), "--device", "gpu", "--batch", str(batch), "--precision", precision,
           "--iterations", str(iterations), "--warmup", str(warmup), "--json"]
    if name not in CNNS:
        cmd += ["--dim", f"seq={SEQ}"]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}{p.stdout[-2000:]}")
    return json.loads(lines[-1])


def torch_times(name: str, batch: int, half: bool, iterations: int, warmup: int,
                device: str) -> tuple[float, float]:
    """Median ms of PyTorch eager: (host tensors in and out, CUDA events on device tensors;
    on a CPU `device`, the second is the wall clock too)."""
    model = build(name).to(device)
    host = inputs(name, batch)
    if half:
        model = model.half()
        host = tuple(t.half() if t.is_floating_point() else t for t in host)
    dev = tuple(t.to(device) for t in host)
    cuda = device.startswith("cuda")

    def wall() -> float:
        t0 = time.perf_counter()
        model(*(t.to(device) for t in host)).cpu()
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3

    def events() -> float:
        if not cuda:
            t0 = time.perf_counter()
            model(*dev)
            return (time.perf_counter() - t0) * 1e3
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        model(*dev)
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e)

    with torch.no_grad():
        for _ in range(warmup):
            wall()
            events()
        w = statistics.median(wall() for _ in range(iterations))
        ev = statistics.median(events() for _ in range(iterations))
    del model
    if cuda:
        torch.cuda.empty_cache()
    return w, ev


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ.get("METAL_MPS_BIN", "target/release/metal-mps"))
    ap.add_argument("--models", type=Path, default=Path("build/gpu-models"))
    ap.add_argument("--only", nargs="+", choices=[*CNNS, *TRANSFORMERS])
    ap.add_argument("--batches", nargs="+", type=int, help="default: 1 32 for CNNs, 1 8 for transformers")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--torch-device", default="cuda", help="PyTorch's device (cpu: a dry run of the harness)")
    args = ap.parse_args()

    torch.backends.cudnn.benchmark = True
    args.models.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name() if args.torch_device.startswith("cuda") else args.torch_device
    header = (f"torch {torch.__version__}, {where}; medians of {args.iterations} runs "
              f"after {args.warmup} warm-up")
    print(header, file=sys.stderr)
    rows = []
    for name in args.only or [*CNNS, *TRANSFORMERS]:
        path = args.models / f"{name}.onnx"
        if not path.is_file():
            try:
                export(name, path)
            except Exception as e:  # an exporter that fails on one model must not cost the others
                print(f"exporting {name} failed: {e!r}", file=sys.stderr)
                rows.append(f"| {name} | - | - | export failed | - | - | - | - | - |")
                continue
        for batch in args.batches or ([1, 32] if name in CNNS else [1, 8]):
            for precision in args.precisions:
                try:
                    o = ours(args.bin, path, name, batch, precision, args.iterations, args.warmup)
                    mine, load = f"{o['median_ms']:.2f}", f"{o['load_ms']:.0f} | {o['first_run_ms']:.0f}"
                except RuntimeError as e:
                    print(e, file=sys.stderr)
                    o, mine, load = None, "failed", "- | -"
                wall, ev = torch_times(name, batch, precision == "fp16", args.iterations, args.warmup,
                                       args.torch_device)
                ratio = f"{o['median_ms'] / wall:.2f}" if o else "-"
                row = f"| {name} | {batch} | {precision} | {mine} | {wall:.2f} | {ev:.2f} | {ratio} | {load} |"
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
    print(f"\n{header}\n")
    print("| model | batch | precision | metal-mps gpu (ms) | torch host in/out (ms) | torch events (ms) "
          "| ratio (ours / torch host) | metal-mps load (ms) | metal-mps first run (ms) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
