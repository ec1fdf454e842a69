"""The ai.onnx.ml operators of scikit-learn exports against onnxruntime, through `metal-mps run`.

Each case is a one-node model built with onnx.helper; onnxruntime's outputs are the expected
values (rtol 1e-4 / atol 1e-5). The binary is $METAL_MPS_BIN (default target/release/metal-mps).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("METAL_MPS_BIN", ROOT / "target" / "release" / "metal-mps"))
ML = "ai.onnx.ml"
F, D, I64, I32 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT32
NP = {F: np.float32, D: np.float64, I64: np.int64, I32: np.int32}


def model(op, inputs, outputs, ml_opset=3, **attrs):
    """inputs/outputs: [(name, elem_type, shape)]."""
    node = helper.make_node(op, [i[0] for i in inputs], [o[0] for o in outputs], domain=ML, **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                  helper.make_opsetid(ML, ml_opset)])


def check(tmp_path: Path, m, feeds: dict[str, np.ndarray]):
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    ort_feeds = {k: v.astype(object) if v.dtype.kind == "U" else v for k, v in feeds.items()}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, ort_feeds)
    args = [str(BIN), "run", str(path), "--output-dir", str(tmp_path)]
    for k, v in feeds.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += ["--input", f"{k}={tmp_path / f'{k}.npy'}"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    for out, want in zip(m.graph.output, expected):
        got = np.load(tmp_path / f"{out.name}.npy")
        if want.dtype == object:  # STRING: onnxruntime gives objects, the CLI writes numpy text
            assert got.dtype.kind == "U", (out.name, got.dtype)
            np.testing.assert_array_equal(got, want.astype(str), err_msg=out.name)
            continue
        assert got.dtype == want.dtype, (out.name, got.dtype, want.dtype)
        assert got.shape == want.shape, (out.name, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=out.name)


X = np.array([[0.5, -1.2, 3.0], [2.0, 0.1, -0.7], [-1.5, 2.5, 0.0], [0.0, 0.0, 0.0]], np.float32)


# Two trees over three features; leaves 3, 4 (tree 0) and 1, 2 (tree 1).
TREES = dict(
    nodes_treeids=[0, 0, 0, 0, 0, 1, 1, 1],
    nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
    nodes_featureids=[0, 1, 0, 0, 0, 2, 0, 0],
    nodes_modes=["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF", "BRANCH_GT", "LEAF", "LEAF"],
    nodes_values=[0.7, 0.0, 0, 0, 0, -0.3, 0, 0],
    nodes_truenodeids=[1, 3, 0, 0, 0, 1, 0, 0],
    nodes_falsenodeids=[2, 4, 0, 0, 0, 2, 0, 0],
)
LEAVES = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]


@pytest.mark.parametrize("agg", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_tree_ensemble_regressor(tmp_path, agg, post):
    t, n, ids, w = [], [], [], []
    for k, (tree, node) in enumerate(LEAVES):
        for target in (0, 1):
            t.append(tree); n.append(node); ids.append(target); w.append(0.5 * k - target + 0.25)
    m = model("TreeEnsembleRegressor", [("X", F, [None, 3])], [("Y", F, [None, 2])],
              n_targets=2, target_treeids=t, target_nodeids=n, target_ids=ids, target_weights=w,
              base_values=[0.1, -0.2], aggregate_function=agg, post_transform=post, **TREES)
    check(tmp_path, m, {"X": X})


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("labels", [[0, 1, 2], [4, 7]])
def test_tree_ensemble_classifier_all_classes(tmp_path, post, labels):
    t, n, ids, w = [], [], [], []
    for k, (tree, node) in enumerate(LEAVES):
        for c in range(len(labels)):
            t.append(tree); n.append(node); ids.append(c); w.append(((k + 1) * (c + 2)) % 5 / 5)
    m = model("TreeEnsembleClassifier", [("X", F, [None, 3])],
              [("Y", I64, [None]), ("Z", F, [None, len(labels)])],
              classlabels_int64s=labels, class_treeids=t, class_nodeids=n, class_ids=ids,
              class_weights=w, post_transform=post, **TREES)
    check(tmp_path, m, {"X": X})


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC"])
@pytest.mark.parametrize("weights", [[0.2, 0.9, 0.6, 0.4, 0.7], [-0.5, 1.2, 0.3, -0.1, 0.8]])
@pytest.mark.parametrize("base", [None, [0.3], [0.0, 0.0]])
@pytest.mark.parametrize("cls", [0, 1])
def test_tree_ensemble_classifier_binary(tmp_path, post, weights, base, cls):
    # Votes for one class only: onnxruntime's binary case (GradientBoostingClassifier exports).
    extra = {} if base is None else {"base_values": base}
    m = model("TreeEnsembleClassifier", [("X", F, [None, 3])], [("Y", I64, [None]), ("Z", F, [None, 2])],
              classlabels_int64s=[10, 20], class_treeids=[t for t, _ in LEAVES],
              class_nodeids=[n for _, n in LEAVES], class_ids=[cls] * 5, class_weights=weights,
              post_transform=post, **extra, **TREES)
    check(tmp_path, m, {"X": X})


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "PROBIT"])
def test_linear_regressor(tmp_path, post):
    m = model("LinearRegressor", [("X", F, [None, 3])], [("Y", F, [None, 2])], targets=2,
              coefficients=[0.1, -0.2, 0.3, 0.05, 0.4, -0.1], intercepts=[0.5, -0.25],
              post_transform=post)
    check(tmp_path, m, {"X": X * 0.1 if post == "PROBIT" else X})


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
@pytest.mark.parametrize("n_classes", [1, 3])
def test_linear_classifier(tmp_path, post, n_classes):
    labels = [3, 8] if n_classes == 1 else [0, 1, 2]
    coef = [0.3, -0.6, 0.2, -0.4, 0.1, 0.5, 0.2, 0.2, -0.3][: 3 * n_classes]
    m = model("LinearClassifier", [("X", F, [None, 3])],
              [("Y", I64, [None]), ("Z", F, [None, 2 if n_classes == 1 else 3])],
              coefficients=coef, intercepts=[0.1, -0.2, 0.05][:n_classes],
              classlabels_ints=labels, post_transform=post)
    check(tmp_path, m, {"X": X})


@pytest.mark.parametrize("dtype", [F, D, I64, I32])
def test_scaler(tmp_path, dtype):
    m = model("Scaler", [("X", dtype, [None, 3])], [("Y", F, [None, 3])],
              offset=[0.5, -1.0, 2.0], scale=[2.0, 0.5, -1.5])
    check(tmp_path, m, {"X": (X * 3).astype(NP[dtype])})


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(tmp_path, norm):
    m = model("Normalizer", [("X", F, [None, 3])], [("Y", F, [None, 3])], norm=norm)
    check(tmp_path, m, {"X": X})


def test_binarizer(tmp_path):
    m = model("Binarizer", [("X", F, [None, 3])], [("Y", F, [None, 3])], threshold=1.0)
    check(tmp_path, m, {"X": np.array([[0, 1, 2], [5, -3, 1.5]], np.float32)})


def test_imputer_nan(tmp_path):
    m = model("Imputer", [("X", F, [None, 3])], [("Y", F, [None, 3])],
              imputed_value_floats=[1.0, 2.0, 3.0], replaced_value_float=float("nan"))
    x = X.copy()
    x[0, 1] = np.nan
    x[2, 2] = np.nan
    check(tmp_path, m, {"X": x})


def test_imputer_int(tmp_path):
    m = model("Imputer", [("X", I64, [None, 3])], [("Y", I64, [None, 3])],
              imputed_value_int64s=[9], replaced_value_int64=-1)
    check(tmp_path, m, {"X": np.array([[-1, 2, 3], [4, -1, -1]], np.int64)})


@pytest.mark.parametrize("dtype", [I64, F])
def test_one_hot_encoder(tmp_path, dtype):
    m = model("OneHotEncoder", [("X", dtype, [None, 2])], [("Y", F, [None, 2, 4])],
              cats_int64s=[1, 3, 5, 7], zeros=1)
    check(tmp_path, m, {"X": np.array([[1, 5], [7, 2], [3, 3]]).astype(NP[dtype])})


def test_feature_vectorizer(tmp_path):
    m = model("FeatureVectorizer", [("A", I64, [None, 2]), ("B", I64, [None, 3])], [("Y", F, [None, 5])],
              inputdimensions=[2, 3])
    check(tmp_path, m, {"A": np.arange(8, dtype=np.int64).reshape(4, 2) - 3,
                        "B": np.arange(12, dtype=np.int64).reshape(4, 3)})


def test_array_feature_extractor(tmp_path):
    m = model("ArrayFeatureExtractor", [("X", F, [None, 3]), ("I", I64, [2])], [("Y", F, [None, 2])])
    check(tmp_path, m, {"X": X, "I": np.array([2, 0], np.int64)})


def test_label_encoder_int_to_float(tmp_path):
    m = model("LabelEncoder", [("X", I64, [None])], [("Y", F, [None])], ml_opset=2,
              keys_int64s=[1, 5, 9], values_floats=[0.5, 1.5, 2.5], default_float=-3.0)
    check(tmp_path, m, {"X": np.array([5, 9, 2, 1], np.int64)})


def test_label_encoder_float_to_int(tmp_path):
    m = model("LabelEncoder", [("X", F, [None])], [("Y", I64, [None])], ml_opset=4,
              keys_floats=[0.5, float("nan"), 2.0], values_int64s=[10, 20, 30], default_int64=-7)
    check(tmp_path, m, {"X": np.array([2.0, np.nan, 0.5, 1.0], np.float32)})


S = TensorProto.STRING
WORDS = np.array(["cat", "dog", "", "émeu", "dog", "yak"])


@pytest.mark.parametrize("n_classes", [1, 3])
def test_linear_classifier_string_labels(tmp_path, n_classes):
    labels = ["no", "yes"] if n_classes == 1 else ["red", "green", "blue"]
    coef = [0.3, -0.6, 0.2, -0.4, 0.1, 0.5, 0.2, 0.2, -0.3][: 3 * n_classes]
    m = model("LinearClassifier", [("X", F, [None, 3])],
              [("Y", S, [None]), ("Z", F, [None, 2 if n_classes == 1 else 3])],
              coefficients=coef, intercepts=[0.1, -0.2, 0.05][:n_classes],
              classlabels_strings=labels, post_transform="LOGISTIC")
    check(tmp_path, m, {"X": X})


@pytest.mark.parametrize("labels", [["a", "b", "c"], ["low", "high"]])
def test_tree_ensemble_classifier_string_labels(tmp_path, labels):
    t, n, ids, w = [], [], [], []
    for k, (tree, node) in enumerate(LEAVES):
        for c in range(len(labels)):
            t.append(tree); n.append(node); ids.append(c); w.append(((k + 1) * (c + 2)) % 5 / 5)
    m = model("TreeEnsembleClassifier", [("X", F, [None, 3])],
              [("Y", S, [None]), ("Z", F, [None, len(labels)])],
              classlabels_strings=labels, class_treeids=t, class_nodeids=n, class_ids=ids,
              class_weights=w, post_transform="SOFTMAX", **TREES)
    check(tmp_path, m, {"X": X})


def test_tree_ensemble_classifier_binary_string_labels(tmp_path):
    m = model("TreeEnsembleClassifier", [("X", F, [None, 3])], [("Y", S, [None]), ("Z", F, [None, 2])],
              classlabels_strings=["neg", "pos"], class_treeids=[t for t, _ in LEAVES],
              class_nodeids=[n for _, n in LEAVES], class_ids=[1] * 5,
              class_weights=[-0.5, 1.2, 0.3, -0.1, 0.8], post_transform="LOGISTIC", **TREES)
    check(tmp_path, m, {"X": X})


def test_one_hot_encoder_strings(tmp_path):
    m = model("OneHotEncoder", [("X", S, [None, 2])], [("Y", F, [None, 2, 3])],
              cats_strings=["dog", "cat", "yak"], zeros=1)
    check(tmp_path, m, {"X": WORDS.reshape(3, 2)})


@pytest.mark.parametrize("keys,values,out", [
    (dict(keys_strings=["cat", "dog", ""]), dict(values_int64s=[1, 2, 3], default_int64=-5), I64),
    (dict(keys_strings=["cat", "yak"]), dict(values_strings=["feline", "bovine"], default_string="?"), S),
    (dict(keys_strings=["cat", "yak"]), dict(values_floats=[0.5, -2.0]), F),
])
def test_label_encoder_from_strings(tmp_path, keys, values, out):
    m = model("LabelEncoder", [("X", S, [None])], [("Y", out, [None])], ml_opset=2, **keys, **values)
    check(tmp_path, m, {"X": WORDS})


def test_label_encoder_int_to_string(tmp_path):
    m = model("LabelEncoder", [("X", I64, [None])], [("Y", S, [None])], ml_opset=2,
              keys_int64s=[3, 1], values_strings=["three", "one"])
    check(tmp_path, m, {"X": np.array([1, 2, 3, 1], np.int64)})


def test_category_mapper_both_ways(tmp_path):
    cats = dict(cats_strings=["cat", "dog", "yak"], cats_int64s=[7, 8, 9])
    check(tmp_path, model("CategoryMapper", [("X", S, [None])], [("Y", I64, [None])],
                          default_int64=-2, **cats), {"X": WORDS})
    check(tmp_path, model("CategoryMapper", [("X", I64, [2, 2])], [("Y", S, [2, 2])],
                          default_string="none", **cats),
          {"X": np.array([[9, 1], [7, 7]], np.int64)})


def test_string_labels_need_string_input_type(tmp_path):
    # Keys are strings, the input is INT64: refused at load, naming both types.
    m = model("LabelEncoder", [("X", I64, [None])], [("Y", I64, [None])], ml_opset=2,
              keys_strings=["a"], values_int64s=[1])
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    p = subprocess.run([str(BIN), "info", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "LabelEncoder" in p.stderr and "STRING" in p.stderr, p.stderr


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("pool", ["strings", "ints"])
def test_tfidf_vectorizer(tmp_path, mode, pool):
    # Unigrams, bigrams and trigrams with skips, against onnxruntime.
    words = ["the", "cat", "sat", "on", "mat", "a"]
    grams = [["cat"], ["mat"], ["sat"], ["the", "cat"], ["cat", "sat"], ["on", "the"], ["the", "cat", "sat"]]
    flat = [w for g in grams[:3] for w in g] + [w for g in grams[3:6] for w in g] + grams[6]
    attrs = dict(mode=mode, min_gram_length=1, max_gram_length=3, max_skip_count=2,
                 ngram_counts=[0, 3, 9], ngram_indexes=[6, 0, 1, 2, 3, 4, 5],
                 weights=[0.5, 1.5, 2.0, 0.25, 3.0, 1.0, 0.75])
    x = np.array([["the", "cat", "sat", "on", "the", "mat", "a", "cat"],
                  ["a", "the", "dog", "cat", "sat", "sat", "on", "the"]])
    if pool == "strings":
        attrs["pool_strings"] = flat
        xtype = TensorProto.STRING
    else:
        ids = {w: 10 * i + 1 for i, w in enumerate(words + ["dog"])}
        attrs["pool_int64s"] = [ids[w] for w in flat]
        x = np.vectorize(ids.get, otypes=[np.int64])(x)
        xtype = I64
    node = helper.make_node("TfIdfVectorizer", ["X"], ["Y"], **attrs)
    graph = helper.make_graph([node], "tfidf", [helper.make_tensor_value_info("X", xtype, [2, 8])],
                              [helper.make_tensor_value_info("Y", F, [2, 7])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    check(tmp_path, m, {"X": x})
