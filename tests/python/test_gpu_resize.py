"""Nearest-neighbour Resize on the GPU engine (the upsampling of detectors and segmentation heads):
every coordinate and rounding mode, scales and sizes, against onnxruntime, with no CPU node."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_models import gpu_available, metal_mps, models  # noqa: F401 (fixtures)

CASES = [
    # (coordinate_transformation_mode, nearest_mode, scales, sizes)
    ("asymmetric", "floor", [1, 1, 2, 2], None),
    ("half_pixel", "round_prefer_floor", [1, 1, 1.5, 0.5], None),
    ("align_corners", "round_prefer_ceil", None, [2, 3, 7, 4]),
    ("pytorch_half_pixel", "ceil", [1, 1, 0.6, 2.5], None),
    ("tf_half_pixel_for_nn", "floor", [1, 1, 3, 1], None),
]


@pytest.mark.parametrize("ctm,nearest,scales,sizes", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_nearest_resize_runs_on_the_gpu(tmp_path, gpu_available, ctm, nearest, scales, sizes):  # noqa: F811
    opset = 11 if ctm == "tf_half_pixel_for_nn" else 19  # opset 11-12 only
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    names = ["x", "roi"]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        names.append("scales")
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        names += ["", "sizes"]
    node = helper.make_node("Resize", names, ["r"], mode="nearest", coordinate_transformation_mode=ctm,
                            nearest_mode=nearest)
    # A kernel after the Resize, so that its input and output are on the device.
    graph = helper.make_graph(
        [node, helper.make_node("Neg", ["r"], ["y"])], "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = tmp_path / "resize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), model)
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6)).astype(np.float32)
    (want,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.save(tmp_path / "x.npy", x)
    p = metal_mps("run", model, "--output-dir", tmp_path, "--device", "gpu", "--input", f"x={tmp_path / 'x.npy'}")
    assert p.returncode == 0, f"metal-mps run failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    got = np.load(tmp_path / "y.npy")
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    info = metal_mps("info", model, "--device", "gpu", "--nodes")
    assert info.returncode == 0, info.stderr
    cpu_nodes = [line for line in info.stdout.splitlines() if "[cpu]" in line]
    assert not cpu_nodes, "\n".join(cpu_nodes)
