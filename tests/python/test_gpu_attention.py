"""Attention on the GPU engine: the decomposed pattern exporters write and the ONNX `Attention`
operator (opset 23) match onnxruntime in fp32 and fp16, run with no CPU node, and as one fused
kernel (the operator always; the pattern in fp32, and in fp16 on adapters without cooperative
matrices, such as lavapipe, where tests run).

(A) The decomposed pattern: `s = MatMul(q, kt)` (kt often a Transpose of k), any number of Mul/Div
by a one-element constant, optionally `Add(s, mask)` or `Add(mask, s)`, `Softmax(axis=-1)`,
optionally `Where(IsNaN(p), 0, p)` (a fully masked row gives zeros), then `MatMul(p, v)`; with
2, 1 or 0 batch dims, broadcast K/V heads, Sq != Skv and head sizes that are not multiples of 16.
(B) The `Attention` operator with no past key/value: 4-D and 3-D inputs, grouped KV heads,
`is_causal`, `scale`, boolean and additive masks.

Every model must match onnxruntime (CPU) and have no node on the CPU engine (`info --nodes`).
A pattern whose softmax is also read elsewhere is not fused. The fusion tests read the kernel labels of `bench --profile` (`gpu <kernel>/<entry>/<type> ...
[grid]` rows): one names "attention" and none is a softmax. Inputs are seeded standard normal,
scaled so scores are O(1), which fp16 holds to about three decimal digits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_models import ATOL, RTOL, gpu_available, metal_mps, models  # noqa: F401 (fixtures)

PRECISIONS = ["fp32", "fp16"]
TOL = {"fp32": (RTOL, ATOL), "fp16": (1e-2, 1e-2)}  # (rtol, atol)


# --- helpers ------------------------------------------------------------------------------------

def normal(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    """Seeded standard-normal values times `scale`, with no exact zeros."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x[x == 0] = 0.5
    return x * np.float32(scale)


def save(path: Path, nodes, inputs: dict[str, np.ndarray], outputs, inits=(), opset: int = 17) -> Path:
    """Saves a checked model whose graph inputs have the shapes and types of `inputs`."""
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.bool_): TensorProto.BOOL}
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info(n, types[a.dtype], a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def onnxruntime_outputs(model: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, inputs)


def run_on_gpu(model: Path, inputs: dict[str, np.ndarray], precision: str, tmp_path: Path) -> None:
    """`metal-mps run` on the GPU engine, its outputs saved as `<name>.npy` in `tmp_path`."""
    args = ["run", model, "--output-dir", tmp_path, "--device", "gpu", "--precision", precision]
    for name, value in inputs.items():
        np.save(tmp_path / f"in_{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / f'in_{name}.npy'}"]
    p = metal_mps(*args)
    assert p.returncode == 0, f"metal-mps run failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    assert "panicked" not in p.stderr


def check_against_onnxruntime(model: Path, inputs: dict[str, np.ndarray], precision: str, tmp_path: Path):
    (want,) = onnxruntime_outputs(model, inputs)
    assert np.isfinite(want).all(), "the reference has NaN or inf: the test model is wrong"
    run_on_gpu(model, inputs, precision, tmp_path)
    got = np.load(tmp_path / "o.npy")
    assert got.dtype == np.float32 and got.shape == want.shape
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got, want


def cpu_nodes(model: Path, precision: str) -> list[str]:
    """The `info --nodes` lines of nodes the GPU engine leaves to the CPU engine."""
    info = metal_mps("info", model, "--device", "gpu", "--precision", precision, "--nodes")
    assert info.returncode == 0, info.stderr
    return [line for line in info.stdout.splitlines() if "[cpu]" in line]


PROFILE_ROW = re.compile(r"^(?P<label>.+?)\s+(?P<ms>[\d.]+)\s+(?P<calls>\d+)\s+(?P<share>[\d.]+)%$")


def gpu_kernel_labels(model: Path, precision: str) -> list[str]:
    """Labels of the GPU kernels in `bench --profile`, e.g. "Softmax/row_wg/F32 [16x1x1]".

    The profile follows the summary line: a header `operator  ms/run  calls  share`, then one row
    per operator, `gpu <kernel>/<entry>/<type> [params] [grid]` for a GPU kernel."""
    p = metal_mps("bench", model, "--device", "gpu", "--precision", precision,
                  "--profile", "--warmup", "1", "--iterations", "2")
    assert p.returncode == 0, f"metal-mps bench failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    rows = [m["label"] for m in map(PROFILE_ROW.match, p.stdout.splitlines()) if m]
    return [label[len("gpu "):] for label in rows if label.startswith("gpu ")]


@pytest.fixture(scope="module")
def gpu_timestamps(gpu_available, models):  # noqa: F811
    """Skips the calling test when the adapter writes no timestamps (no GPU rows in a profile)."""
    if not gpu_kernel_labels(models / "tiny.onnx", "fp32"):
        pytest.skip("the GPU adapter writes no timestamps: `bench --profile` lists no kernels")


def assert_fused(model: Path, precision: str) -> None:
    labels = gpu_kernel_labels(model, precision)
    listing = "\n".join(labels) or "(no GPU kernels: every node ran on the CPU engine)"
    assert any("attention" in label.lower() for label in labels), f"no attention kernel in:\n{listing}"
    softmax = [label for label in labels if "softmax" in label.lower() and "attention" not in label.lower()]
    assert not softmax, f"softmax kernels left:\n{listing}"


# --- (A) the decomposed pattern -----------------------------------------------------------------

@dataclass(frozen=True)
class Pattern:
    q: tuple  # [..., Sq, D]
    k: tuple  # [..., Skv, D] when transpose_k, else kt itself: [..., D, Skv]
    v: tuple  # [..., Skv, Dv]
    transpose_k: bool = True  # the graph computes kt = Transpose(k), as exporters do
    scales: tuple = (("Div", "sqrt"),)  # ("Mul" | "Div", value or "sqrt" for sqrt(D))
    mask: tuple | None = None  # shape of the additive float mask
    mask_first: bool = False  # Add(mask, s) rather than Add(s, mask)
    where_nan: bool = False  # Where(IsNaN(p), 0, p) after the Softmax
    fully_masked: bool = False  # every key of the last batch is -inf in the mask

    @property
    def d(self) -> int:
        return self.q[-1]


def pattern_model(path: Path, pat: Pattern, inputs: dict[str, np.ndarray]) -> Path:
    kt_name = "kt"
    nodes, inits = [], []
    if pat.transpose_k:
        perm = list(range(len(pat.k)))
        perm[-2:] = perm[-1], perm[-2]
        nodes.append(helper.make_node("Transpose", ["k"], ["kt"], perm=perm))
    else:
        kt_name = "k"
    nodes.append(helper.make_node("MatMul", ["q", kt_name], ["s0"]))
    s = "s0"
    for i, (op, value) in enumerate(pat.scales):
        value = math.sqrt(pat.d) if value == "sqrt" else value
        inits.append(numpy_helper.from_array(np.array([value], np.float32), f"c{i}"))
        nodes.append(helper.make_node(op, [s, f"c{i}"], [f"s{i + 1}"]))
        s = f"s{i + 1}"
    if pat.mask is not None:
        operands = ["mask", s] if pat.mask_first else [s, "mask"]
        nodes.append(helper.make_node("Add", operands, ["masked"]))
        s = "masked"
    nodes.append(helper.make_node("Softmax", [s], ["p"], axis=-1))
    p = "p"
    if pat.where_nan:
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
        nodes += [helper.make_node("IsNaN", ["p"], ["nan"]),
                  helper.make_node("Where", ["nan", "zero", "p"], ["p0"])]
        p = "p0"
    nodes.append(helper.make_node("MatMul", [p, "v"], ["o"]))
    kt = inputs["k"].swapaxes(-1, -2) if pat.transpose_k else inputs["k"]
    out_shape = np.matmul(np.matmul(inputs["q"], kt), inputs["v"]).shape
    return save(path, nodes, inputs, [("o", out_shape)], inits)


def additive_mask(shape, seed: int, fully_masked: bool = False) -> np.ndarray:
    """Small random biases with some -inf and some -1e4 keys (never a whole row of them), the
    last batch all -inf when `fully_masked`."""
    m = normal(shape, seed, 0.5)
    skv = shape[-1]
    rows = m.reshape(-1, skv)
    for r, row in enumerate(rows):
        row[(r + 1) % skv] = -np.inf
        row[(r + 3) % skv] = -1e4
        row[(r * 5 + 2) % skv] = -np.inf
    if fully_masked:
        m[-1] = -np.inf
    return m


def pattern_inputs(pat: Pattern, seed: int) -> dict[str, np.ndarray]:
    # Scores are q.k / sqrt(D) under the usual scales; unscaled models get q / sqrt(D) instead.
    scaled = any(v == "sqrt" or (op == "Mul" and v < 1) for op, v in pat.scales)
    inputs = {"q": normal(pat.q, seed, 1.0 if scaled else 1 / math.sqrt(pat.d)),
              "k": normal(pat.k, seed + 1), "v": normal(pat.v, seed + 2)}
    if pat.mask is not None:
        inputs["mask"] = additive_mask(pat.mask, seed + 3, pat.fully_masked)
    return inputs


B, H, S, D = 2, 3, 10, 16
MASK = (B, 1, 1, S)
QKV = dict(q=(B, H, S, D), k=(B, H, S, D), v=(B, H, S, D))
PATTERNS = {
    "div-sqrt-d": Pattern(**QKV),
    "mul": Pattern(**QKV, scales=(("Mul", 1 / math.sqrt(D)),)),
    "mul-then-div": Pattern(**QKV, scales=(("Mul", 0.5), ("Div", math.sqrt(D) / 2))),
    "unscaled": Pattern(**QKV, scales=()),
    "div-mask": Pattern(**QKV, mask=MASK),
    "mul-mask-first": Pattern(**QKV, scales=(("Mul", 1 / math.sqrt(D)),), mask=MASK, mask_first=True),
    "unscaled-mask": Pattern(**QKV, scales=(), mask=MASK),
    "causal-mask-1-1-s-s": Pattern(**QKV, mask=(1, 1, S, S)),
    "mask-where-isnan": Pattern(**QKV, mask=MASK, where_nan=True),
    "mask-where-isnan-fully-masked": Pattern(**QKV, mask=MASK, where_nan=True, fully_masked=True),
    "sq7-skv13": Pattern(q=(B, H, 7, D), k=(B, H, 13, D), v=(B, H, 13, D), mask=(B, 1, 1, 13)),
    "d24-dv40": Pattern(q=(B, H, S, 24), k=(B, H, S, 24), v=(B, H, S, 40), mask=MASK),
    "bert-b2-h4-s128-d64": Pattern(q=(2, 4, 128, 64), k=(2, 4, 128, 64), v=(2, 4, 128, 64),
                                   mask=(2, 1, 1, 128), where_nan=True),
    "3d-no-heads": Pattern(q=(B, 7, D), k=(B, 9, D), v=(B, 9, 20), mask=(B, 1, 9)),
    "2d-no-batch": Pattern(q=(7, D), k=(9, D), v=(9, 20)),
    "kv-head-broadcast": Pattern(q=(B, H, 7, D), k=(B, 1, 9, D), v=(B, 1, 9, D), mask=(B, 1, 1, 9)),
    "kt-input": Pattern(q=(B, H, 7, D), k=(B, H, D, 9), v=(B, H, 9, D), transpose_k=False,
                        mask=(B, 1, 1, 9)),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", list(PATTERNS))
def test_pattern_matches_onnxruntime(tmp_path, gpu_available, variant, precision):  # noqa: F811
    pat = PATTERNS[variant]
    inputs = pattern_inputs(pat, seed=len(variant))
    model = pattern_model(tmp_path / f"{variant}.onnx", pat, inputs)
    got, want = check_against_onnxruntime(model, inputs, precision, tmp_path)
    if pat.fully_masked:
        assert not want[-1].any() and not got[-1].any(), "a fully masked batch gives zeros"
    assert not cpu_nodes(model, precision), "\n".join(cpu_nodes(model, precision))


# --- (B) the Attention operator (opset 23) ------------------------------------------------------

@dataclass(frozen=True)
class AttentionCase:
    q: tuple  # (B, Hq, Sq, D), or (B, Sq, Hq*D) with heads
    k: tuple
    v: tuple
    heads: tuple | None = None  # (q_num_heads, kv_num_heads) for 3-D inputs
    mask: tuple | None = None  # shape of attn_mask
    bool_mask: bool = False
    is_causal: bool = False
    scale: float | None = None


def attention_model(path: Path, case: AttentionCase, inputs: dict[str, np.ndarray]) -> Path:
    attrs = {}
    if case.heads:
        attrs.update(q_num_heads=case.heads[0], kv_num_heads=case.heads[1])
    if case.is_causal:
        attrs["is_causal"] = 1
    if case.scale is not None:
        attrs["scale"] = case.scale
    names = ["q", "k", "v"] + (["mask"] if case.mask else [])
    node = helper.make_node("Attention", names, ["o"], **attrs)
    if case.heads:
        out_shape = (*case.q[:2], case.heads[0] * case.v[2] // case.heads[1])
    else:
        out_shape = (*case.q[:3], case.v[3])
    return save(path, [node], inputs, [("o", out_shape)], opset=23)


def attention_inputs(case: AttentionCase, seed: int) -> dict[str, np.ndarray]:
    inputs = {"q": normal(case.q, seed), "k": normal(case.k, seed + 1), "v": normal(case.v, seed + 2)}
    if case.mask and case.bool_mask:
        keep = np.random.default_rng(seed + 3).random(case.mask) < 0.7
        keep[..., seed % case.mask[-1]] = True  # no row masked through
        inputs["mask"] = keep
    elif case.mask:
        inputs["mask"] = additive_mask(case.mask, seed + 3)
    return inputs


@pytest.fixture(scope="module")
def onnxruntime_attention(tmp_path_factory):
    """Skips the calling test when onnxruntime cannot run the opset-23 Attention operator."""
    case = ATTENTION["4d"]
    inputs = attention_inputs(case, 1)
    try:
        onnxruntime_outputs(attention_model(tmp_path_factory.mktemp("probe") / "a.onnx", case, inputs), inputs)
    except Exception as e:  # noqa: BLE001 (any failure means no reference)
        pytest.skip(f"onnxruntime {ort.__version__} cannot run Attention (opset 23): {e}")


Bq, Hq, Sq, Skv, Dh = 2, 4, 7, 9, 16
ATTENTION = {
    "4d": AttentionCase(q=(Bq, Hq, Sq, Dh), k=(Bq, Hq, Skv, Dh), v=(Bq, Hq, Skv, Dh)),
    "4d-bool-mask-sq-skv": AttentionCase(q=(Bq, Hq, Sq, Dh), k=(Bq, Hq, Skv, Dh), v=(Bq, Hq, Skv, Dh),
                                         mask=(Sq, Skv), bool_mask=True),
    "4d-float-mask-b-1-sq-skv": AttentionCase(q=(Bq, Hq, Sq, Dh), k=(Bq, Hq, Skv, Dh), v=(Bq, Hq, Skv, 24),
                                              mask=(Bq, 1, Sq, Skv)),
    "causal": AttentionCase(q=(Bq, Hq, Skv, Dh), k=(Bq, Hq, Skv, Dh), v=(Bq, Hq, Skv, Dh), is_causal=True),
    "gqa-hq4-hkv2": AttentionCase(q=(Bq, 4, Sq, Dh), k=(Bq, 2, Skv, Dh), v=(Bq, 2, Skv, Dh)),
    "3d-heads-4-2": AttentionCase(q=(Bq, Sq, 4 * Dh), k=(Bq, Skv, 2 * Dh), v=(Bq, Skv, 2 * 8), heads=(4, 2)),
    "scale-0.3": AttentionCase(q=(Bq, Hq, Sq, Dh), k=(Bq, Hq, Skv, Dh), v=(Bq, Hq, Skv, Dh), scale=0.3),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", list(ATTENTION))
def test_attention_op_matches_onnxruntime(tmp_path, gpu_available, onnxruntime_attention,  # noqa: F811
                                          variant, precision):
    case = ATTENTION[variant]
    inputs = attention_inputs(case, seed=len(variant))
    model = attention_model(tmp_path / f"{variant}.onnx", case, inputs)
    check_against_onnxruntime(model, inputs, precision, tmp_path)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", list(ATTENTION))
def test_attention_op_runs_on_the_gpu(tmp_path, gpu_available, variant, precision):  # noqa: F811
    case = ATTENTION[variant]
    inputs = attention_inputs(case, seed=len(variant))
    model = attention_model(tmp_path / f"{variant}.onnx", case, inputs)
    left = cpu_nodes(model, precision)
    assert not left, "\n".join(left)


# --- fusion: one attention kernel, no softmax ---------------------------------------------------

def test_pattern_is_one_attention_kernel(tmp_path, gpu_timestamps):
    """In fp32 (in fp16, adapters with cooperative matrices keep the chain where its scores are
    small: its products are faster there)."""
    precision = "fp32"
    pat = PATTERNS["mask-where-isnan"]
    model = pattern_model(tmp_path / "pattern.onnx", pat, pattern_inputs(pat, seed=1))
    assert_fused(model, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_attention_op_is_one_attention_kernel(tmp_path, gpu_timestamps, precision):
    case = ATTENTION["4d-float-mask-b-1-sq-skv"]
    model = attention_model(tmp_path / "attention.onnx", case, attention_inputs(case, seed=1))
    assert_fused(model, precision)


def test_probabilities_read_elsewhere_are_not_fused(tmp_path, gpu_timestamps):
    """The chain fuses only when each step is read by the next alone: with the softmax also a
    graph output, the steps run as they are, and both outputs match onnxruntime."""
    pat = PATTERNS["div-mask"]
    inputs = pattern_inputs(pat, seed=3)
    model = onnx.load(pattern_model(tmp_path / "pattern.onnx", pat, inputs))
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [B, H, S, S]))
    path = tmp_path / "probabilities.onnx"
    onnx.save(model, path)
    want = onnxruntime_outputs(path, inputs)
    run_on_gpu(path, inputs, "fp32", tmp_path)
    for name, w in zip(["o", "p"], want):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), w, rtol=RTOL, atol=ATOL, err_msg=name)
    labels = gpu_kernel_labels(path, "fp32")
    assert any(label.startswith("Softmax") for label in labels), "\n".join(labels)
    assert not any("attention" in label.lower() for label in labels), "\n".join(labels)


def test_scores_added_to_themselves_are_not_a_mask(tmp_path, gpu_available):  # noqa: F811
    """`Add(s, s)` after the product is no mask: the chain runs unfused and stays correct."""
    inputs = pattern_inputs(PATTERNS["div-sqrt-d"], seed=5)
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Add", ["s0", "s0"], ["s1"]),
        helper.make_node("Softmax", ["s1"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
    ]
    model = save(tmp_path / "doubled.onnx", nodes, inputs, [("o", (B, H, S, D))])
    check_against_onnxruntime(model, inputs, "fp32", tmp_path)
