"""Inputs and outputs beyond numeric tensors, against onnxruntime's Python API: STRING tensors
(numpy text, bytes and object arrays in; object arrays of str out), sequences (lists of arrays),
optionals (None or the value) and int4/int2 (ml_dtypes arrays, compared with onnx's reference
evaluator: onnxruntime's Python API refuses numpy int4 arrays). Wrong kinds of values raise
InvalidArgument with a message naming the input."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import metal_mps


def model(nodes, inputs, outputs, opset=21):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def both(m):
    data = m.SerializeToString()
    return (
        ort.InferenceSession(data, providers=["CPUExecutionProvider"]),
        metal_mps.InferenceSession(data, providers=["CPUExecutionProvider"]),
    )


def signature(session):
    return [(a.name, a.type) for a in session.get_inputs()], [(a.name, a.type) for a in session.get_outputs()]


def string_model():
    return model(
        [helper.make_node("Equal", ["x", "y"], ["eq"]), helper.make_node("StringConcat", ["x", "y"], ["cat"])],
        [helper.make_tensor_value_info(n, TensorProto.STRING, ["n"]) for n in ("x", "y")],
        [
            helper.make_tensor_value_info("eq", TensorProto.BOOL, ["n"]),
            helper.make_tensor_value_info("cat", TensorProto.STRING, ["n"]),
        ],
    )


@pytest.mark.parametrize(
    "x",
    [
        np.array(["a", "bé", ""]),
        np.array(["a", "bé", ""], dtype=object),
        np.array(["a".encode(), "bé".encode(), b""], dtype=object),
        np.array(["a".encode(), "bé".encode(), b""]),  # 'S' (onnxruntime refuses non-ASCII bytes)
        np.array(["a", "bé".encode(), ""], dtype=object),  # str and bytes mixed
    ],
    ids=["U", "O-str", "O-bytes", "S", "O-mixed"],
)
def test_strings_like_onnxruntime(x):
    reference, ours = both(string_model())
    assert signature(ours) == signature(reference)
    assert ours.get_inputs()[0].type == "tensor(string)"
    y = np.array(["a", "b", "z"], dtype=object)
    want = reference.run(None, {"x": np.array(["a", "bé", ""]), "y": y})
    got = ours.run(None, {"x": x, "y": y})
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].dtype == object and got[1].shape == want[1].shape
    assert all(type(s) is str for s in got[1])
    assert got[1].tolist() == want[1].tolist() == ["aa", "béb", "z"]


@pytest.mark.parametrize(
    "x",
    [np.array("one"), np.array([["a"]]), np.empty((0, 2), dtype=object), np.array([["a", "b"], ["c", "d"]])[:, ::-1]],
    ids=["0-d", "1x1", "empty", "strided"],
)
def test_string_shapes_survive(x):
    dims = [None] * x.ndim
    m = model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.STRING, dims)],
        [helper.make_tensor_value_info("y", TensorProto.STRING, dims)],
    )
    reference, ours = both(m)
    if True:
        (want,) = reference.run(None, {"x": x})
        (got,) = ours.run(None, {"x": x})
        assert got.dtype == want.dtype == object and got.shape == want.shape
        assert got.tolist() == want.tolist()


def test_sequence_in_and_out_like_onnxruntime():
    m = model(
        [helper.make_node("SequenceInsert", ["s", "t"], ["o"]), helper.make_node("SequenceLength", ["o"], ["n"])],
        [
            helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, [None]),
        ],
        [
            helper.make_tensor_sequence_value_info("o", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
        ],
    )
    reference, ours = both(m)
    assert signature(ours) == signature(reference)
    assert ours.get_inputs()[0].type == "seq(tensor(float))"
    for seq in [[np.ones(2, np.float32), np.zeros((2, 3), np.float32)], [], (np.ones(1, np.float32),)]:
        feed = {"s": seq, "t": np.array([5.0], np.float32)}
        want = reference.run(None, {"s": list(seq), "t": feed["t"]})
        got = ours.run(None, feed)
        assert isinstance(got[0], list) and len(got[0]) == len(want[0])
        for g, w in zip(got[0], want[0]):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(got[1], want[1])
    # Only the outputs asked for, in that order.
    n, o = ours.run(["n", "o"], {"s": [], "t": np.array([1.0], np.float32)})
    assert n == 1 and len(o) == 1


def test_split_to_sequence_output():
    m = model(
        [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
    )
    reference, ours = both(m)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    (want,) = reference.run(None, {"x": x})
    (got,) = ours.run(None, {"x": x})
    assert [g.tolist() for g in got] == [w.tolist() for w in want]


def optional_model():
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, ["n"]))
    return model(
        [helper.make_node("OptionalHasElement", ["o"], ["has"]), helper.make_node("Identity", ["o"], ["same"])],
        [helper.make_value_info("o", opt)],
        [helper.make_tensor_value_info("has", TensorProto.BOOL, []), helper.make_value_info("same", opt)],
        opset=18,
    )


@pytest.mark.parametrize("value", [None, np.array([1.0, 2.0], np.float32), "left out"])
def test_optional_none_or_value_like_onnxruntime(value):
    reference, ours = both(optional_model())
    assert signature(ours) == signature(reference)
    assert ours.get_inputs()[0].type == "optional(tensor(float))"
    feed = {} if isinstance(value, str) else {"o": value}
    want = reference.run(None, feed)
    got = ours.run(None, feed)
    np.testing.assert_array_equal(got[0], want[0])
    if want[1] is None:
        assert got[1] is None
    else:
        np.testing.assert_array_equal(got[1], want[1])
        assert got[1].dtype == want[1].dtype


@pytest.mark.parametrize(
    ("onnx_type", "dtype", "values"),
    [
        (TensorProto.INT4, ml_dtypes.int4, [7, -8, -1, 0, 3, -5]),
        (TensorProto.UINT4, ml_dtypes.uint4, [0, 15, 8, 1, 7, 9]),
        (TensorProto.INT2, ml_dtypes.int2, [1, -2, -1, 0, 1, -2]),
        (TensorProto.UINT2, ml_dtypes.uint2, [0, 3, 2, 1, 0, 3]),
    ],
    ids=["int4", "uint4", "int2", "uint2"],
)
def test_small_integers_in_and_out(onnx_type, dtype, values):
    # x (small) -> float, and float -> small: both directions of the ml_dtypes conversion.
    m = model(
        [
            helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["f"], ["back"], to=onnx_type),
        ],
        [helper.make_tensor_value_info("x", onnx_type, [2, 3])],
        [
            helper.make_tensor_value_info("f", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("back", onnx_type, [2, 3]),
        ],
    )
    x = np.array(values, dtype=dtype).reshape(2, 3)
    ours = metal_mps.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = ReferenceEvaluator(m).run(None, {"x": x})
    got = ours.run(None, {"x": x})
    np.testing.assert_array_equal(got[0], np.array(values, np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].dtype == np.dtype(dtype)
    assert got[1].astype(np.int8).tolist() == x.astype(np.int8).tolist() == want[1].astype(np.int8).tolist()


@pytest.mark.parametrize(
    ("build", "feed", "words"),
    [
        ("string", {"x": np.array([1, "a"], dtype=object)}, ["'x'", "str or bytes", "element 0", "int"]),
        ("string", {"x": None}, ["'x'", "None", "optional"]),
        ("sequence", {"s": np.ones(2, np.float32)}, ["'s'", "sequence", "list", "ndarray"]),
        ("sequence", {"s": None}, ["'s'", "sequence", "None"]),
        ("sequence", {"s": [np.ones(1, np.float32), {"a": 1}]}, ["'s[1]'", "dict"]),
        ("sequence", {"s": [np.ones(1, np.float32), "x"]}, ["'s'", "FLOAT", "STRING"]),
        ("sequence", {"s": [np.ones(1, np.int64)]}, ["'s'"]),
        ("sequence", {"s": [], "t": [[1.0, 2.0], [3.0]]}, ["'t'", "ragged"]),
        ("sequence", {"s": [], "t": np.array([1.0], np.float32), "u": 1}, ["unknown input 'u'"]),
    ],
)
def test_wrong_values_are_invalid_argument(build, feed, words):
    if build == "string":
        m = string_model()
        feed = {**feed, "y": np.array(["a", "b"])}
    else:
        m = model(
            [helper.make_node("SequenceInsert", ["s", "t"], ["o"])],
            [
                helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("t", TensorProto.FLOAT, [None]),
            ],
            [helper.make_tensor_sequence_value_info("o", TensorProto.FLOAT, None)],
        )
        feed = {"t": np.array([1.0], np.float32), **feed}
    ours = metal_mps.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(metal_mps.InvalidArgument) as e:
        ours.run(None, feed)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_missing_sequence_input_is_value_error_like_onnxruntime():
    m = model(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    ours = metal_mps.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"Required inputs \(\['s'\]\) are missing"):
        ours.run(None, {})


def test_run_async_with_a_sequence():
    import threading

    m = model(
        [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
    )
    ours = metal_mps.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    done = threading.Event()
    result = {}

    def callback(outputs, user_data, error):
        result.update(outputs=outputs, user_data=user_data, error=error)
        done.set()

    ours.run_async(None, {"x": np.eye(2, dtype=np.float32)}, callback, "tag")
    assert done.wait(30)
    assert result["error"] == "" and result["user_data"] == "tag"
    assert [a.tolist() for a in result["outputs"][0]] == [[[1.0, 0.0]], [[0.0, 1.0]]]
