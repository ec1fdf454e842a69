"""MaxPool with NaN inputs on the CPU engine: a NaN anywhere in a window gives NaN.

onnxruntime's MaxPool propagates a NaN only from some positions of a window (its vectorized max
returns one of its operands), so the test checks both sides: every output onnxruntime makes NaN
is NaN here, every window holding a NaN is NaN here (numpy's max), and every other output equals
onnxruntime's exactly.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from test_models import metal_mps, save_model

CASES = [  # kernel, strides, pads, input shape
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 3, 8, 8)),
    ((3, 3), (1, 1), (1, 1, 1, 1), (2, 2, 7, 9)),
    ((3, 3), (2, 2), (0, 0, 0, 0), (1, 4, 11, 11)),
    ((2, 3), (1, 2), (0, 1, 0, 1), (1, 1, 6, 10)),
]


def windows_max(x: np.ndarray, kernel, strides, pads) -> np.ndarray:
    """MaxPool by numpy: -inf padding, np.max over each window (NaN if the window holds one)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, strides, pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return y


@pytest.mark.parametrize("kernel,strides,pads,shape", CASES)
def test_maxpool_propagates_nan(tmp_path, kernel, strides, pads, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[rng.choice(x.size, size=max(1, x.size // 12), replace=False)] = np.nan
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(strides),
                            pads=list(pads))
    model = save_model(tmp_path / "maxpool.onnx", [node],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    np.save(tmp_path / "x.npy", x)
    p = metal_mps("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path)
    assert p.returncode == 0, p.stderr
    got = np.load(tmp_path / "y.npy")
    (ort_y,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    expected = windows_max(x, kernel, strides, pads)
    assert got.shape == ort_y.shape == expected.shape
    assert np.isnan(got[np.isnan(ort_y)]).all(), "a NaN onnxruntime gives is missing"
    np.testing.assert_array_equal(got, expected)
    clean = ~np.isnan(expected)
    np.testing.assert_array_equal(got[clean], ort_y[clean])
    assert np.isnan(expected).any() and clean.any()
