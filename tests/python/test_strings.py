"""STRING tensors through the data-movement operators, Equal and Cast, through `metal-mps run`.

Inputs are numpy text arrays ('U'); the expected values are numpy's own results for the same
indexing (independent of the engine). The binary is $METAL_MPS_BIN (default target/release/metal-mps).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("METAL_MPS_BIN", ROOT / "target" / "release" / "metal-mps"))
S = TensorProto.STRING

X = np.array([["apple", "b", "ça"], ["", "apple", "zebra"]])


def run(tmp_path: Path, nodes, outputs, inits=(), x=X):
    graph = helper.make_graph(
        nodes, "strings",
        [helper.make_tensor_value_info("x", S, list(x.shape))],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        initializer=list(inits))
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    np.save(tmp_path / "x.npy", x)
    p = subprocess.run([str(BIN), "run", str(path), "--output-dir", str(tmp_path),
                        "--input", f"x={tmp_path / 'x.npy'}"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    return [np.load(tmp_path / f"{n}.npy") for n, _ in outputs]


def test_gather_concat_reshape_transpose(tmp_path):
    idx = numpy_helper.from_array(np.array([1, 0, 1], np.int64), "idx")
    shape = numpy_helper.from_array(np.array([3, 4], np.int64), "shape")
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=0),
        helper.make_node("Concat", ["x", "x"], ["c"], axis=1),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"]),
    ]
    g, r, t = run(tmp_path, nodes, [("g", S), ("r", S), ("t", S)], [idx, shape])
    np.testing.assert_array_equal(g, X[[1, 0, 1]])
    np.testing.assert_array_equal(r, np.concatenate([X, X], axis=1).reshape(3, 4))
    np.testing.assert_array_equal(t, np.concatenate([X, X], axis=1).reshape(3, 4).T)


def test_equal_where_unique(tmp_path):
    other = numpy_helper.from_array(np.array(["apple", "b", "x"], dtype=object), "other")
    nodes = [
        helper.make_node("Equal", ["x", "other"], ["eq"]),
        helper.make_node("Where", ["eq", "x", "x_t"], ["w"]),
        helper.make_node("Transpose", ["x"], ["xt"]),
        helper.make_node("Reshape", ["xt", "shape"], ["x_t"]),
        helper.make_node("Unique", ["x"], ["u", "ui", "uinv", "ucount"], sorted=1),
    ]
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    eq, w, u, ucount = run(
        tmp_path, nodes,
        [("eq", TensorProto.BOOL), ("w", S), ("u", S), ("ucount", TensorProto.INT64)],
        [other, shape])
    want_eq = X == np.array(["apple", "b", "x"])
    np.testing.assert_array_equal(eq, want_eq)
    np.testing.assert_array_equal(w, np.where(want_eq, X, X.T.reshape(2, 3)))
    values, counts = np.unique(X, return_counts=True)
    np.testing.assert_array_equal(u, values)
    np.testing.assert_array_equal(ucount, counts)


def test_cast_between_strings_and_numbers(tmp_path):
    x = np.array(["1.5", "-2", "1e3", "NaN", "-INF"])
    nodes = [
        helper.make_node("Cast", ["x"], ["f"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["f"], ["back"], to=S),
    ]
    f, back = run(tmp_path, nodes, [("f", TensorProto.DOUBLE), ("back", S)], x=x)
    np.testing.assert_array_equal(f, np.array([1.5, -2.0, 1000.0, np.nan, -np.inf]))
    np.testing.assert_array_equal(back, np.array(["1.5", "-2", "1000", "NaN", "-INF"]))


@pytest.mark.parametrize("op, inputs", [("Add", ["x", "x"]), ("Trilu", ["x"])])  # built-in, module
def test_numeric_operator_on_strings_is_refused_at_load(tmp_path, op, inputs):
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"])], op.lower(),
        [helper.make_tensor_value_info("x", S, [2, 2])],
        [helper.make_tensor_value_info("y", S, [2, 2])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    p = subprocess.run([str(BIN), "info", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"{op} on STRING tensors" in p.stderr + p.stdout
