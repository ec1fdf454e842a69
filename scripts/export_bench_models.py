#!/usr/bin/env python3
"""Export the full-size benchmark models with PyTorch's TorchScript exporter (opset 17, random
weights, nothing downloaded): torchvision ResNet-50 and MobileNetV2 (input [batch,3,224,224]) and
transformers BERT-base (input_ids and attention_mask [batch,128]), batch dim dynamic. Needs torch,
torchvision and transformers (the H200 machine has them).

    python scripts/export_bench_models.py OUTDIR

Writes OUTDIR/resnet50_tv.onnx, OUTDIR/mobilenetv2_tv.onnx and OUTDIR/bert_base.onnx, the names
`scripts/bench_cpu.py --models OUTDIR` looks for.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

torch.manual_seed(0)


class Bert(torch.nn.Module):
    """BERT-base (12 layers, 768 wide, 12 heads) returning the last hidden state."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.m = BertModel(BertConfig(attn_implementation="eager"))

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export(model: torch.nn.Module, args: tuple, names: list[str], path: Path, seq: bool) -> None:
    model.eval()
    dynamic = {n: {0: "batch", **({1: "seq"} if seq else {})} for n in names}
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["output"],
                          opset_version=17, dynamo=False, dynamic_axes=dynamic, do_constant_folding=True)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    image = (torch.randn(1, 3, 224, 224),)
    export(torchvision.models.resnet50(), image, ["input"], out / "resnet50_tv.onnx", False)
    export(torchvision.models.mobilenet_v2(), image, ["input"], out / "mobilenetv2_tv.onnx", False)
    ids = torch.randint(0, 30000, (1, 128))
    export(Bert(), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], out / "bert_base.onnx", True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
