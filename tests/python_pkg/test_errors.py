"""Errors raise exceptions of onnxruntime's classes (all subclasses of metal_mps.MetalMpsError)
whose message is the engine's: the node, op and shapes. Where onnxruntime raises the same class
for the same mistake, the test checks that too."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import metal_mps
from metal_mps import capi

ORT_STATE = ort.capi.onnxruntime_pybind11_state


def add_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="the_add")],
        "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def reshape_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="the_reshape")],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def custom_op_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="the_custom", domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    ).SerializeToString()


def raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    raise AssertionError("no exception raised")


def test_classes_are_onnxruntimes_names_under_one_base():
    for name in ["Fail", "InvalidArgument", "NoSuchFile", "NotImplemented", "InvalidProtobuf", "InvalidGraph"]:
        cls = getattr(metal_mps, name)
        assert issubclass(cls, metal_mps.MetalMpsError) and issubclass(cls, Exception)
        assert getattr(capi, name) is cls
        assert getattr(capi.onnxruntime_pybind11_state, name) is cls
        assert hasattr(ORT_STATE, name)


@pytest.mark.parametrize(
    "case, feed, expected, words",
    [
        ("wrong dtype", {"a": np.ones((2, 3), np.float64), "b": np.ones((2, 3), np.float32)},
         "InvalidArgument", ["'a'", "FLOAT", "DOUBLE"]),
        ("wrong rank", {"a": np.ones((2, 3, 1), np.float32), "b": np.ones((2, 3), np.float32)},
         "InvalidArgument", ["'a'", "rank 2"]),
        ("fixed dim", {"a": np.ones((2, 4), np.float32), "b": np.ones((2, 4), np.float32)},
         "InvalidArgument", ["'a'", "dimension 1 must be 3"]),
        ("unknown input", {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32),
                           "c": np.ones(1, np.float32)}, "InvalidArgument", ["unknown input 'c'"]),
    ],
)
def test_bad_inputs_are_invalid_argument_like_onnxruntime(case, feed, expected, words):
    ours = metal_mps.InferenceSession(add_model())
    theirs = ort.InferenceSession(add_model(), providers=["CPUExecutionProvider"])
    e = raised(lambda: ours.run(None, feed))
    assert type(e) is getattr(metal_mps, expected), f"{case}: {type(e).__name__}: {e}"
    assert type(raised(lambda: theirs.run(None, feed))).__name__ == expected
    for w in words:
        assert w in str(e), f"{case}: {e}"


def test_missing_inputs_are_value_error_like_onnxruntime():
    # onnxruntime checks the feed in Python and raises ValueError, with this message.
    ours = metal_mps.InferenceSession(add_model())
    theirs = ort.InferenceSession(add_model(), providers=["CPUExecutionProvider"])
    feed = {"a": np.ones((2, 3), np.float32)}
    e, want = raised(lambda: ours.run(None, feed)), raised(lambda: theirs.run(None, feed))
    assert type(e) is type(want) is ValueError
    assert str(e) == str(want), (e, want)


def test_symbolic_dims_must_agree():
    ours = metal_mps.InferenceSession(add_model())
    e = raised(lambda: ours.run(None, {"a": np.ones((2, 3), np.float32), "b": np.ones((4, 3), np.float32)}))
    assert isinstance(e, metal_mps.InvalidArgument) and "'n'" in str(e), e


def test_unknown_output_name_is_invalid_argument():
    ours = metal_mps.InferenceSession(add_model())
    feed = {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)}
    e = raised(lambda: ours.run(["nope"], feed))
    assert isinstance(e, metal_mps.InvalidArgument) and "'nope'" in str(e) and "y" in str(e)
    theirs = ort.InferenceSession(add_model(), providers=["CPUExecutionProvider"])
    assert type(raised(lambda: theirs.run(["nope"], feed))).__name__ == "InvalidArgument"


def test_missing_file_is_no_such_file(tmp_path):
    path = str(tmp_path / "absent.onnx")
    e = raised(lambda: metal_mps.InferenceSession(path))
    assert isinstance(e, metal_mps.NoSuchFile) and "absent.onnx" in str(e), e
    assert type(raised(lambda: ort.InferenceSession(path, providers=["CPUExecutionProvider"]))).__name__ == "NoSuchFile"


def test_garbage_is_invalid_protobuf():
    e = raised(lambda: metal_mps.InferenceSession(b"\x08\x07\xff\xff\xff not a model"))
    assert isinstance(e, metal_mps.InvalidProtobuf), f"{type(e).__name__}: {e}"
    theirs = raised(lambda: ort.InferenceSession(b"\x08\x07\xff\xff\xff not a model", providers=["CPUExecutionProvider"]))
    assert type(theirs).__name__ == "InvalidProtobuf"


def test_unknown_operator_is_not_implemented_naming_node_and_domain():
    e = raised(lambda: metal_mps.InferenceSession(custom_op_model()))
    assert isinstance(e, metal_mps.NotImplemented), f"{type(e).__name__}: {e}"
    for w in ["the_custom", "Frobnicate", "com.example"]:
        assert w in str(e), e


def test_kernel_failure_is_fail_naming_node_op_and_shapes():
    ours = metal_mps.InferenceSession(reshape_model())
    e = raised(lambda: ours.run(None, {"x": np.ones((2, 3), np.float32), "shape": np.array([4, 4], np.int64)}))
    assert isinstance(e, metal_mps.Fail), f"{type(e).__name__}: {e}"
    for w in ["the_reshape", "Reshape", "[2, 3]"]:
        assert w in str(e), e


def test_bad_arguments():
    with pytest.raises(ValueError, match="CUDAExecutionProvider"):
        metal_mps.InferenceSession(add_model(), providers=["CUDAExecutionProvider"])
    with pytest.raises(TypeError):
        metal_mps.InferenceSession(12)
    ours = metal_mps.InferenceSession(add_model())
    e = raised(lambda: ours.run(None, {"a": np.array(["x", "y"]), "b": np.ones((2, 3), np.float32)}))
    assert isinstance(e, metal_mps.InvalidArgument) and "'a'" in str(e), e
