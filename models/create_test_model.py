#!/usr/bin/env python3
"""Build the test models as ONNX files (opset 17, FP32, dynamic batch dim "batch").

  simple_cnn    input [N,3,224,224] -> Conv 3->16 3x3 pad 1 -> Relu -> MaxPool 2x2 -> [N,16,112,112]
  resnet_block  input [N,64,56,56] -> Conv3x3+BN+Relu -> Conv3x3+BN -> Add(input) -> Relu
  resnet50      input [N,3,224,224] -> ResNet-50 v1 (torchvision layout, BN kept as nodes,
                GlobalAveragePool + Flatten + Gemm head) -> [N,1000]
  transformer_layer  input [N,128,768] -> one BERT-base encoder layer as PyTorch exports it
                (MatMul+Add projections, Reshape/Transpose into 12 heads, scaled Q·Kᵀ, Softmax,
                ·V, output projection, residual + LayerNormalization, Erf-GELU feed-forward 3072,
                residual + LayerNormalization) -> [N,128,768]
  mlp           input [N,1024] -> Gemm 1024 + Relu -> Gemm 1024 + Relu -> Gemm 10 -> [N,10]
  mobilenet_block  input [N,32,56,56] -> three inverted-residual blocks (pointwise expand + BN +
                Relu6, depthwise + BN + Relu6, pointwise project + BN): 32->192->32 with a 3x3
                stride-1 depthwise and the input added; 32->192->64 with a 3x3 stride-2 depthwise;
                64->384->64 with a 5x5 depthwise (EfficientNet) and the residual added -> [N,64,28,28]
  tiny          input [N,4] -> Add(constant) -> [N,4]   (for protocol-overhead benchmarks)

Weights are random from a fixed seed with He-normal conv init; ResNet-50's BatchNormalization
running statistics are then calibrated (onnxruntime, seeded random batch) so activations stay
normalized through the depth and the logits depend on the input. Every model is checked with onnx.checker and run once with
onnxruntime. Input name is "input" and output name "output" in every model.

Usage: python models/create_test_model.py OUTDIR [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17
SEED = 20240601


class Builder:
    """Appends nodes and FP32 initializers to one graph."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        name = self._name(op.lower())
        out = output or f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, bias: bool = False,
             group: int = 1) -> str:
        name = self._name("conv")
        fan_in = cin // group * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(cout, cin // group, k, k))
        inputs = [x, self.const(f"{name}.weight", w)]
        if bias:
            inputs.append(self.const(f"{name}.bias", self.rng.uniform(-0.1, 0.1, size=cout)))
        p = k // 2
        attrs = {"group": group} if group != 1 else {}
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p],
                         **attrs)

    def bn(self, x: str, c: int, gamma: float = 1.0) -> str:
        name = self._name("bn")
        scale = gamma * self.rng.uniform(0.8, 1.2, size=c)
        bias = self.rng.uniform(-0.1, 0.1, size=c)
        mean = self.rng.uniform(-0.1, 0.1, size=c)
        var = self.rng.uniform(0.8, 1.5, size=c)
        ins = [x] + [self.const(f"{name}.{k}", v) for k, v in
                     (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
        return self.node("BatchNormalization", ins, epsilon=1e-5)

    def relu(self, x: str, output: str | None = None) -> str:
        return self.node("Relu", [x], output)

    def relu6(self, x: str) -> str:
        """Clip to [0, 6] (MobileNet's Relu6), bounds as initializers."""
        if "relu6.min" not in (t.name for t in self.inits):
            self.const("relu6.min", np.array(0.0))
            self.const("relu6.max", np.array(6.0))
        return self.node("Clip", [x, "relu6.min", "relu6.max"])

    def model(self, name: str, in_shape: list, out_shape: list, output: str = "output") -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        m = helper.make_model(graph, producer_name="metal_mps create_test_model.py",
                              opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = IR_VERSION
        return m


def simple_cnn() -> onnx.ModelProto:
    b = Builder(SEED + 1)
    x = b.conv("input", 3, 16, 3, bias=True)
    x = b.relu(x)
    b.node("MaxPool", [x], "output", kernel_shape=[2, 2], strides=[2, 2])
    return b.model("simple_cnn", ["batch", 3, 224, 224], ["batch", 16, 112, 112])


def resnet_block() -> onnx.ModelProto:
    b = Builder(SEED + 2)
    x = b.relu(b.bn(b.conv("input", 64, 64, 3), 64))
    x = b.bn(b.conv(x, 64, 64, 3), 64)
    b.relu(b.node("Add", [x, "input"]), "output")
    return b.model("resnet_block", ["batch", 64, 56, 56], ["batch", 64, 56, 56])


def resnet50() -> onnx.ModelProto:
    """ResNet-50 v1 (post-activation bottlenecks, stride on the 3x3 conv as in torchvision)."""
    b = Builder(SEED + 3)
    x = b.relu(b.bn(b.conv("input", 3, 64, 7, stride=2), 64))
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            cout = width * 4
            y = b.relu(b.bn(b.conv(x, cin, width, 1), width))
            y = b.relu(b.bn(b.conv(y, width, width, 3, stride=stride), width))
            # A small last-BN scale (as in trained ResNets) keeps the residual stream from
            # growing block after block, so the logits stay in a sane range.
            y = b.bn(b.conv(y, width, cout, 1), cout, gamma=0.3)
            skip = x if i > 0 else b.bn(b.conv(x, cin, cout, 1, stride=stride), cout)
            x = b.relu(b.node("Add", [y, skip]))
            cin = cout
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = b.rng.normal(0.0, np.sqrt(1.0 / 2048), size=(1000, 2048))
    fc_b = b.rng.uniform(-0.05, 0.05, size=1000)
    b.node("Gemm", [x, b.const("fc.weight", w), b.const("fc.bias", fc_b)], "output", transB=1)
    return calibrate_bn(b.model("resnet50", ["batch", 3, 224, 224], ["batch", 1000]))


def calibrate_bn(model: onnx.ModelProto, batch: int = 1, size: int = 112) -> onnx.ModelProto:
    """Set each BatchNormalization's running mean/var to the statistics its input actually has
    on a seeded random batch (as training would), so activations stay normalized through the
    depth and the output depends on the input. BNs are calibrated in graph order (each one
    changes what the next sees), in one onnxruntime session where the stats are graph inputs."""
    import onnxruntime as ort

    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    stat_names = {name for n in bns for name in n.input[3:5]}
    stats = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in stat_names}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(t for t in model.graph.initializer if t.name not in stat_names)
    probe.graph.input.extend(helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in stats.items())
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n.input[0]) for n in bns)
    for d, name in zip(probe.graph.input[0].type.tensor_type.shape.dim[2:], ("h", "w")):
        d.dim_param = name  # calibrate at a smaller size: same statistics, 4x faster
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(SEED).standard_normal((batch, 3, size, size)).astype(np.float32)
    for n in bns:
        (a,) = sess.run([n.input[0]], {"input": x, **stats})
        stats[n.input[3]] = a.mean(axis=(0, 2, 3)).astype(np.float32)
        stats[n.input[4]] = a.var(axis=(0, 2, 3)).astype(np.float32)
    for t in model.graph.initializer:
        if t.name in stats:
            t.CopyFrom(numpy_helper.from_array(stats[t.name], t.name))
    return model


def transformer_layer(seq: int = 128, d: int = 768, heads: int = 12, ff: int = 3072) -> onnx.ModelProto:
    """One post-norm BERT encoder layer, node for node what torch.onnx.export writes for
    BertLayer (opset 17: LayerNormalization is one node; GELU is the Erf form)."""
    b = Builder(SEED + 6)
    hd = d // heads

    def linear(x: str, cin: int, cout: int) -> str:
        w = b.rng.normal(0.0, np.sqrt(1.0 / cin), size=(cin, cout))
        name = b._name("linear")
        y = b.node("MatMul", [x, b.const(f"{name}.weight", w)])
        return b.node("Add", [y, b.const(f"{name}.bias", b.rng.uniform(-0.05, 0.05, size=cout))])

    def shape(name: str, dims: list[int]) -> str:
        b.inits.append(numpy_helper.from_array(np.array(dims, dtype=np.int64), name))
        return name

    def layer_norm(x: str) -> str:
        name = b._name("ln")
        scale = b.const(f"{name}.weight", b.rng.uniform(0.8, 1.2, size=d))
        bias = b.const(f"{name}.bias", b.rng.uniform(-0.1, 0.1, size=d))
        return b.node("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-12)

    def heads_of(x: str) -> str:
        x = b.node("Reshape", [x, shape(b._name("heads"), [0, 0, heads, hd])])
        return b.node("Transpose", [x], perm=[0, 2, 1, 3])

    q = heads_of(linear("input", d, d))
    k = b.node("Transpose", [b.node("Reshape", [linear("input", d, d),
                                                 shape("k_heads", [0, 0, heads, hd])])], perm=[0, 2, 3, 1])
    v = heads_of(linear("input", d, d))
    scores = b.node("Div", [b.node("MatMul", [q, k]), b.const("sqrt_head_dim", np.array(np.sqrt(hd)))])
    ctx = b.node("MatMul", [b.node("Softmax", [scores], axis=-1), v])
    ctx = b.node("Reshape", [b.node("Transpose", [ctx], perm=[0, 2, 1, 3]), shape("merge", [0, 0, d])])
    x = layer_norm(b.node("Add", [linear(ctx, d, d), "input"]))
    h = linear(x, d, ff)
    erf = b.node("Erf", [b.node("Div", [h, b.const("sqrt2", np.array(np.sqrt(2.0)))])])
    gelu = b.node("Mul", [b.node("Mul", [h, b.node("Add", [erf, b.const("one", np.array(1.0))])]),
                          b.const("half", np.array(0.5))])
    y = b.node("Add", [linear(gelu, ff, d), x])
    name = b._name("ln")
    b.node("LayerNormalization", [y, b.const(f"{name}.weight", np.ones(d)), b.const(f"{name}.bias", np.zeros(d))],
           "output", axis=-1, epsilon=1e-12)
    return b.model("transformer_layer", ["batch", seq, d], ["batch", seq, d])


def mlp() -> onnx.ModelProto:
    """Three Linear layers as PyTorch exports them for a 2-D input (Gemm, transB=1)."""
    b = Builder(SEED + 7)
    x = "input"
    for i, (cin, cout) in enumerate(((1024, 1024), (1024, 1024), (1024, 10))):
        w = b.rng.normal(0.0, np.sqrt(2.0 / cin), size=(cout, cin))
        bias = b.rng.uniform(-0.05, 0.05, size=cout)
        last = i == 2
        x = b.node("Gemm", [x, b.const(f"fc{i}.weight", w), b.const(f"fc{i}.bias", bias)],
                   "output" if last else None, transB=1)
        if not last:
            x = b.relu(x)
    return b.model("mlp", ["batch", 1024], ["batch", 10])
def mobilenet_block() -> onnx.ModelProto:
    """Inverted residuals as in MobileNetV2 (and a 5x5 one as in EfficientNet)."""
    b = Builder(SEED + 5)

    def inverted_residual(x: str, cin: int, cout: int, expand: int, k: int, stride: int,
                          output: str | None = None) -> str:
        hidden = cin * expand
        y = b.relu6(b.bn(b.conv(x, cin, hidden, 1), hidden))
        y = b.relu6(b.bn(b.conv(y, hidden, hidden, k, stride=stride, group=hidden), hidden))
        # A small last-BN scale keeps the residual stream from growing block after block.
        y = b.bn(b.conv(y, hidden, cout, 1), cout, gamma=0.3)
        return b.node("Add", [y, x], output) if stride == 1 and cin == cout else y

    x = inverted_residual("input", 32, 32, 6, 3, 1)
    x = inverted_residual(x, 32, 64, 6, 3, 2)
    inverted_residual(x, 64, 64, 6, 5, 1, "output")
    return b.model("mobilenet_block", ["batch", 32, 56, 56], ["batch", 64, 28, 28])


def tiny() -> onnx.ModelProto:
    b = Builder(SEED + 4)
    b.node("Add", ["input", b.const("tiny.bias", np.array([1.0, 2.0, 3.0, 4.0]))], "output")
    return b.model("tiny", ["batch", 4], ["batch", 4])


MODELS = {"simple_cnn": simple_cnn, "resnet_block": resnet_block, "resnet50": resnet50,
          "transformer_layer": transformer_layer, "mlp": mlp, "mobilenet_block": mobilenet_block,
          "tiny": tiny}


def validate(path: Path, batch: int = 2) -> str:
    """onnx.checker + one onnxruntime run on a seeded random input; returns a summary line."""
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y,) = sess.run(None, {inp.name: x})
    if not np.isfinite(y).all() or float(y.std()) == 0.0:
        raise RuntimeError(f"{path.name}: degenerate output")
    return f"output {list(y.shape)} mean {y.mean():.4g} std {y.std():.4g} max|y| {np.abs(y).max():.4g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--only", nargs="+", choices=sorted(MODELS), help="build only these models")
    ap.add_argument("--no-validate", action="store_true", help="skip the onnx.checker/onnxruntime check")
    args = ap.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name in args.only or MODELS:
        path = args.outdir / f"{name}.onnx"
        data = MODELS[name]().SerializeToString()
        if not (path.is_file() and path.read_bytes() == data):
            path.write_bytes(data)
        summary = "" if args.no_validate else "  " + validate(path)
        print(f"{path} ({len(data) / 1e6:.1f} MB){summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
