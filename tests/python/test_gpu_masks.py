"""Boolean tensors on the GPU engine: an attention mask as exporters write it (a Cast of an
int64 mask to bool, And/Or/Xor/Not, Expand, Where, GatherND with constant indices) runs with no
CPU node, and matches onnxruntime, boolean outputs included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_models import ATOL, RTOL, gpu_available, metal_mps, models  # noqa: F401 (fixtures)

B, H, S = 2, 3, 5


def mask_model(path: Path) -> Path:
    nodes = [
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.BOOL),
        helper.make_node("Not", ["flags"], ["nf"]),
        helper.make_node("Xor", ["m", "nf"], ["x"]),
        helper.make_node("Or", ["x", "flags"], ["o"]),
        helper.make_node("And", ["o", "m"], ["keep"]),
        helper.make_node("Unsqueeze", ["keep", "axis1"], ["keep3"]),
        helper.make_node("Expand", ["keep3", "shape"], ["wide"]),
        helper.make_node("Where", ["wide", "scores", "floor"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        # A float to bool cast: zero is false, anything else (NaN too) true.
        helper.make_node("Cast", ["scores"], ["nonzero"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["nonzero"], ["count_in"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["count_in", "last"], ["count"], keepdims=0),
        # Rows picked by constant indices (the dynamo exporter's mask), negative ones too.
        helper.make_node("GatherND", ["wide", "pairs"], ["picked"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([B, H, S], np.int64), "shape"),
        numpy_helper.from_array(np.array(-1e4, np.float32), "floor"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([[0, 1], [1, 2], [1, -1], [-2, 0]], np.int64), "pairs"),
    ]
    graph = helper.make_graph(
        nodes, "masks",
        [helper.make_tensor_value_info("mask", TensorProto.INT64, [B, S]),
         helper.make_tensor_value_info("flags", TensorProto.BOOL, [S]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [B, H, S])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [B, H, S]),
         helper.make_tensor_value_info("keep", TensorProto.BOOL, [B, S]),
         helper.make_tensor_value_info("nonzero", TensorProto.BOOL, [B, H, S]),
         helper.make_tensor_value_info("count", TensorProto.FLOAT, [B, H]),
         helper.make_tensor_value_info("picked", TensorProto.BOOL, [4, S])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_boolean_mask_runs_on_the_gpu(tmp_path, gpu_available, precision):  # noqa: F811
    model = mask_model(tmp_path / "masks.onnx")
    rng = np.random.default_rng(7)
    inputs = {
        "mask": np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], np.int64) * rng.integers(1, 9, (B, S)),
        "flags": np.array([True, False, True, False, False]),
        "scores": rng.standard_normal((B, H, S)).astype(np.float32),
    }
    inputs["scores"][0, 1, 2] = 0.0
    inputs["scores"][1, 2, 4] = np.nan
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, inputs)
    args = ["run", model, "--output-dir", tmp_path, "--device", "gpu", "--precision", precision]
    for name, value in inputs.items():
        np.save(tmp_path / f"in_{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / f'in_{name}.npy'}"]
    p = metal_mps(*args)
    assert p.returncode == 0, f"metal-mps run failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    names = ["probs", "keep", "nonzero", "count", "picked"]
    for name, want in zip(names, expected):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if name == "probs":
            # The NaN row is NaN in both; fp16 holds three decimal digits.
            tol = 1e-2 if precision == "fp16" else RTOL
            np.testing.assert_allclose(got, want, rtol=tol, atol=ATOL, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    info = metal_mps("info", model, "--device", "gpu", "--precision", precision, "--nodes")
    assert info.returncode == 0, info.stderr
    cpu_nodes = [line for line in info.stdout.splitlines() if "[cpu]" in line]
    assert not cpu_nodes, "\n".join(cpu_nodes)
