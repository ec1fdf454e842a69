#!/usr/bin/env python3
"""Export the real-exporter test fixtures (tests/models/*.onnx) with PyTorch's own exporters.

Each model is a real torchvision / transformers architecture or a common pattern (YOLO-style
detection head, segmentation decoder, LSTM tagger, data-dependent If), built from a shrunken
configuration with random weights (nothing is downloaded), and exported by the TorchScript-based
exporter (`dynamo=False`, opset 17) and by the dynamo exporter (`dynamo=True`, opset 18) where
that exporter handles it. Batch (and sequence) dims are dynamic. Needs torch, torchvision,
transformers and onnx (the H200 machine has them: see docs/PERFORMANCE-gpu.md for how it is run).

    python scripts/export_fixtures.py OUTDIR

Writes OUTDIR/<name>.<exporter>.onnx and OUTDIR/manifest.json (input names, dtypes, shapes with
the dynamic dims named, and the value ranges of integer inputs). tests/python/test_exported.py runs
each fixture at two batch sizes (and two sequence lengths) on the CPU and GPU engines against
onnxruntime.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

torch.manual_seed(0)


def small_resnet():
    """torchvision's ResNet with its own BasicBlock, narrow widths."""
    from torchvision.models.resnet import BasicBlock

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            down = nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))
            self.layers = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, 2, down))
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return TinyResNet()


def mobilenet_v3():
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf, MobileNetV3

    settings, last = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    return MobileNetV3(settings, last, num_classes=10)


def efficientnet():
    from torchvision.models.efficientnet import _efficientnet_conf, EfficientNet

    settings, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return EfficientNet(settings, 0.2, last_channel=last, num_classes=10)


def convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)


def swin():
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4], num_classes=10)


class YoloStyle(nn.Module):
    """A YOLO-style detector: a conv backbone, an FPN-style upsample (Resize) and Concat, a head
    whose output is Split into box, objectness and classes, and box decoding against a grid."""

    def __init__(self, nc=3):
        super().__init__()
        self.nc = nc
        self.b1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU())
        self.b2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.SiLU())
        self.lat = nn.Conv2d(16, 8, 1)
        self.head = nn.Conv2d(16, 5 + nc, 1)

    def forward(self, x):
        p1 = self.b1(x)
        p2 = self.b2(p1)
        up = F.interpolate(self.lat(p2), scale_factor=2.0, mode="nearest")
        y = self.head(torch.cat([p1, up], 1))
        n, c, h, w = y.shape
        y = y.flatten(2).transpose(1, 2)  # [n, h*w, 5+nc]
        xy, wh, conf = torch.split(y, [2, 2, 1 + self.nc], dim=2)
        gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        grid = torch.stack([gx, gy], -1).reshape(1, h * w, 2)
        xy = (xy.sigmoid() * 2 - 0.5 + grid) * 4.0
        wh = torch.exp(wh.clamp(max=4.0)) * 4.0
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 2)
        return boxes, conf.sigmoid()


class SegNet(nn.Module):
    """A segmentation net: strided encoder, ConvTranspose decoder, bilinear Resize to the input size."""

    def __init__(self, classes=4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.dec = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        y = self.dec(self.enc(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class LstmTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 12, num_layers=1, batch_first=True, bidirectional=True)
        self.out = nn.Linear(24, 5)

    def forward(self, tokens):
        y, _ = self.lstm(self.emb(tokens))
        return self.out(y)


class Gated(nn.Module):
    """Data-dependent control flow: an If on the sign of the input's mean."""

    def forward(self, x):
        if bool(x.mean() > 0):
            return torch.relu(x) * 2.0
        return torch.tanh(x) - 1.0


def bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg).eval()


def gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    return GPT2Model(cfg).eval()


class HfWrapper(nn.Module):
    """The last hidden state of a transformers model, from ids and an attention mask."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


IMAGE = {"dtype": "float32", "shape": ["batch", 3, 32, 32]}
MODELS = {
    # name: (constructor, {input: spec}, exporters)
    "resnet": (small_resnet, {"x": IMAGE}, ("ts", "dynamo")),
    "mobilenet_v3": (mobilenet_v3, {"x": IMAGE}, ("ts", "dynamo")),
    "efficientnet": (efficientnet, {"x": IMAGE}, ("ts", "dynamo")),
    "convnext": (convnext, {"x": IMAGE}, ("ts", "dynamo")),
    "vit": (vit, {"x": IMAGE}, ("ts", "dynamo")),
    "swin": (swin, {"x": IMAGE}, ("ts", "dynamo")),
    "yolo": (YoloStyle, {"x": IMAGE}, ("ts", "dynamo")),
    "segnet": (SegNet, {"x": IMAGE}, ("ts", "dynamo")),
    "lstm": (LstmTagger, {"tokens": {"dtype": "int64", "shape": ["batch", "seq"], "high": 50}}, ("ts", "dynamo")),
    "if": (lambda: torch.jit.script(Gated()), {"x": {"dtype": "float32", "shape": ["batch", 8]}}, ("ts",)),
    "bert": (lambda: HfWrapper(bert()), {
        "input_ids": {"dtype": "int64", "shape": ["batch", "seq"], "high": 100},
        "attention_mask": {"dtype": "int64", "shape": ["batch", "seq"], "high": 2, "ones": True},
    }, ("ts", "dynamo")),
    "gpt2": (lambda: HfWrapper(gpt2()), {
        "input_ids": {"dtype": "int64", "shape": ["batch", "seq"], "high": 100},
        "attention_mask": {"dtype": "int64", "shape": ["batch", "seq"], "high": 2, "ones": True},
    }, ("dynamo", "ts")),
}


def example(spec, sizes={"batch": 2, "seq": 8}):
    shape = [sizes.get(d, d) if isinstance(d, str) else d for d in spec["shape"]]
    if spec["dtype"] == "int64":
        if spec.get("ones"):
            return torch.ones(shape, dtype=torch.int64)
        return torch.randint(0, spec["high"], shape)
    return torch.randn(shape)


def export(name, make, inputs, exporter, out: Path):
    model = make()
    model.eval()
    args = tuple(example(s) for s in inputs.values())
    path = out / f"{name}.{exporter}.onnx"
    names = list(inputs)
    if exporter == "ts":
        dyn = {n: {i: d for i, d in enumerate(s["shape"]) if isinstance(d, str)} for n, s in inputs.items()}
        torch.onnx.export(model, args, str(path), input_names=names, opset_version=17, dynamo=False,
                          dynamic_axes=dyn, do_constant_folding=True)
    else:
        from torch.export import Dim

        dims = {}
        shapes = {}
        for n, s in inputs.items():
            shapes[n] = {i: dims.setdefault(d, Dim(d, min=1, max=64)) for i, d in enumerate(s["shape"]) if isinstance(d, str)}
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=18, input_names=names,
                                 dynamic_shapes=tuple(shapes.values()), external_data=False)
        prog.save(str(path))
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    ops = sorted({n.op_type for n in m.graph.node})
    return path, ops


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    failures = []
    for name, (make, inputs, exporters) in MODELS.items():
        for exporter in exporters:
            try:
                torch.manual_seed(0)
                path, ops = export(name, make, inputs, exporter, out)
            except Exception as e:  # noqa: BLE001 - report and go on with the other fixtures
                failures.append(f"{name}.{exporter}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                traceback.print_exc(limit=2)
                continue
            manifest[path.name] = {"inputs": inputs, "ops": ops, "exporter": exporter,
                                   "torch": torch.__version__}
            print(f"{path.name}: {path.stat().st_size // 1024} KiB, ops {' '.join(ops)}")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for f in failures:
        print("FAILED", f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
