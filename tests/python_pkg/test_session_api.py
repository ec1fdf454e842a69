"""InferenceSession's API against onnxruntime's on the same models: signatures, metadata,
providers, output selection, dtypes, non-contiguous inputs, run_async, options, and that
C-contiguous inputs are read without a copy."""

from __future__ import annotations

import resource
import sys
import threading

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import metal_mps


def model(nodes, inputs, outputs, opset=17, **meta) -> bytes:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, doc_string="the graph"),
                          opset_imports=[helper.make_opsetid("", opset)], **meta)
    return m.SerializeToString()


def two_outputs() -> bytes:
    return model(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", None, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1, 3])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", None, 3]),
         helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["batch", None, 3])],
        producer_name="the producer", producer_version="7.1", domain="org.example", model_version=42,
        doc_string="the model",
    )


def both(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]), metal_mps.InferenceSession(data)


def test_signature_metadata_and_providers_match_onnxruntime():
    theirs, ours = both(two_outputs())
    for get in ["get_inputs", "get_outputs"]:
        assert [(a.name, a.type, a.shape) for a in getattr(ours, get)()] == \
               [(a.name, a.type, a.shape) for a in getattr(theirs, get)()]
    assert ours.get_inputs()[0].shape == ["batch", None, 3]
    a, b = ours.get_modelmeta(), theirs.get_modelmeta()
    for field in ["producer_name", "graph_name", "graph_description", "domain", "description", "version",
                  "custom_metadata_map"]:
        assert getattr(a, field) == getattr(b, field), field
    assert ours.get_providers() == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in metal_mps.get_available_providers()
    assert metal_mps.get_all_providers() == ["MetalMpsExecutionProvider", "CPUExecutionProvider"]


def test_custom_metadata_matches_onnxruntime():
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(m, {"author": "me", "license": "MIT"})
    theirs, ours = both(m.SerializeToString())
    assert ours.get_modelmeta().custom_metadata_map == theirs.get_modelmeta().custom_metadata_map == \
        {"author": "me", "license": "MIT"}


def test_output_selection_and_order():
    theirs, ours = both(two_outputs())
    feed = {"a": np.arange(12, dtype=np.float32).reshape(2, 2, 3), "b": np.full((1, 1, 3), 2, np.float32)}
    for names in [None, [], ["prod"], ["prod", "sum"], ["sum", "sum"]]:
        got, want = ours.run(names, feed), theirs.run(names, feed)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_non_contiguous_and_non_native_inputs():
    theirs, ours = both(two_outputs())
    base = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    feed = {"a": base.transpose(1, 0, 2)[:, :, 1:], "b": np.full((1, 1, 3), 0.5, ">f4")}
    assert not feed["a"].flags.c_contiguous
    for g, w in zip(ours.run(None, feed), theirs.run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feed.items()})):
        np.testing.assert_array_equal(g, w)


def test_scalar_inputs_keep_rank_zero():
    """numpy scalars, 0-d arrays and Python numbers are rank-0 inputs (not shape (1,)), as in onnxruntime."""
    data = model([helper.make_node("Mul", ["x", "s"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                  helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    theirs, ours = both(data)
    x = np.array([1.0, -2.0, 3.5], np.float32)
    for s in (np.float32(2.5), np.array(2.5, np.float32), np.array(2.5, np.float32)[()]):
        np.testing.assert_array_equal(ours.run(None, {"x": x, "s": s})[0], theirs.run(None, {"x": x, "s": np.asarray(s)})[0])
    with pytest.raises(metal_mps.InvalidArgument, match="rank 0"):
        ours.run(None, {"x": x, "s": np.array([2.5], np.float32)})


@pytest.mark.parametrize("dtype, onnx_type", [
    (np.float32, TensorProto.FLOAT), (np.float16, TensorProto.FLOAT16), (np.float64, TensorProto.DOUBLE),
    (np.int8, TensorProto.INT8), (np.int16, TensorProto.INT16), (np.int32, TensorProto.INT32),
    (np.int64, TensorProto.INT64), (np.uint8, TensorProto.UINT8), (np.uint16, TensorProto.UINT16),
    (np.uint32, TensorProto.UINT32), (np.uint64, TensorProto.UINT64), (np.bool_, TensorProto.BOOL),
    (ml_dtypes.bfloat16, TensorProto.BFLOAT16),
])
def test_dtypes_round_trip(dtype, onnx_type):
    data = model([helper.make_node("Identity", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", onnx_type, [2, 3])],
                 [helper.make_tensor_value_info("y", onnx_type, [2, 3])], opset=21)
    x = (np.arange(6).reshape(2, 3) % 2 if dtype is np.bool_ else np.arange(6).reshape(2, 3) - 2).astype(dtype)
    ours = metal_mps.InferenceSession(data)
    (y,) = ours.run(None, {"x": x})
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y.astype(np.float64), x.astype(np.float64))
    if dtype is not ml_dtypes.bfloat16:  # onnxruntime's Python API has no bfloat16
        (want,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert want.dtype == y.dtype
        assert ours.get_inputs()[0].type == ort.InferenceSession(data, providers=["CPUExecutionProvider"]).get_inputs()[0].type


def test_run_async_calls_back_with_outputs_or_the_error():
    theirs, ours = both(two_outputs())
    feed = {"a": np.ones((1, 2, 3), np.float32), "b": np.full((1, 1, 3), 3, np.float32)}
    results = []
    done = threading.Event()

    def callback(outputs, user_data, err):
        results.append((outputs, user_data, err))
        if len(results) == 2:
            done.set()

    ours.run_async(["prod"], feed, callback, "first")
    ours.run_async(None, {"a": np.ones((1, 2, 3), np.float64), "b": feed["b"]}, callback, "second")
    assert done.wait(30)
    by_tag = {r[1]: r for r in results}
    np.testing.assert_array_equal(by_tag["first"][0][0], theirs.run(["prod"], feed)[0])
    assert by_tag["first"][2] == ""
    assert by_tag["second"][0] == [] and "'a'" in by_tag["second"][2]


def test_session_options():
    so = metal_mps.SessionOptions()
    assert so.device == "auto" and so.precision == "fp32"
    so.graph_optimization_level = metal_mps.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    so.device = "cpu"
    theirs, _ = both(two_outputs())
    sess = metal_mps.InferenceSession(two_outputs(), so, providers=None)
    assert sess.get_session_options().graph_optimization_level == metal_mps.GraphOptimizationLevel.ORT_DISABLE_ALL
    feed = {"a": np.ones((2, 1, 3), np.float32), "b": np.full((1, 1, 3), 3, np.float32)}
    for g, w in zip(sess.run(None, feed), theirs.run(None, feed)):
        np.testing.assert_array_equal(g, w)
    so.precision = "fp64"
    with pytest.raises(ValueError, match="fp64"):
        metal_mps.InferenceSession(two_outputs(), so)
    so = metal_mps.SessionOptions()
    so.device = "tpu"
    with pytest.raises(ValueError, match="tpu"):
        metal_mps.InferenceSession(two_outputs(), so)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kilobytes on Linux")
def test_contiguous_inputs_are_read_in_place():
    # Gather of one element: the kernel itself reads the input in place and allocates nothing.
    data = model([helper.make_node("Gather", ["x", "i"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
                  helper.make_tensor_value_info("i", TensorProto.INT64, [])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], opset=17)
    sess = metal_mps.InferenceSession(data)
    sess.run(None, {"x": np.ones(16, np.float32), "i": np.array(3)})
    mib = 256
    x = np.full(mib * 2**20 // 4, 1.0, np.float32)
    x[12345] = 7.0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    (y,) = sess.run(None, {"x": x, "i": np.array(12345)})
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - before
    assert float(y) == 7.0
    # A copy of the input would raise the peak by its 256 MiB.
    assert grew < mib // 4, f"peak memory grew by {grew} MiB running on a {mib} MiB input"


def test_unaligned_inputs_are_copied_aligned():
    theirs, ours = both(two_outputs())
    raw = np.zeros(2 * 2 * 3 * 4 + 1, np.uint8)
    a = np.frombuffer(raw.data, np.float32, count=12, offset=1).reshape(2, 2, 3)
    assert not a.flags.aligned
    feed = {"a": a, "b": np.full((1, 1, 3), 2, np.float32)}
    for g, w in zip(ours.run(None, feed), theirs.run(None, {"a": a.copy(), "b": feed["b"]})):
        np.testing.assert_array_equal(g, w)
