"""metal_mps.InferenceSession against onnxruntime on the repository's models: the test models of
models/create_test_model.py and the PyTorch-exported models of tests/models/exported (real
architectures with dynamic batch and sequence dims). Same inputs, outputs within rtol 1e-3 /
atol 1e-4; declared inputs and outputs (names, types, fixed dims) agree."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

import metal_mps
from conftest import EXPORTED

RTOL, ATOL = 1e-3, 1e-4
MANIFEST = json.loads((EXPORTED / "manifest.json").read_text())


def sessions(path: str):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    reference = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ours = metal_mps.InferenceSession(path, providers=["CPUExecutionProvider"])
    return reference, ours


def assert_same_signature(reference, ours):
    for theirs, mine in [(reference.get_inputs(), ours.get_inputs()), (reference.get_outputs(), ours.get_outputs())]:
        assert [a.name for a in mine] == [a.name for a in theirs]
        assert [a.type for a in mine] == [a.type for a in theirs]
        for a, b in zip(mine, theirs):
            assert len(a.shape) == len(b.shape), a.name
            # Fixed dims agree; onnxruntime may leave a dim symbolic that inference fixed.
            assert all(x == y for x, y in zip(a.shape, b.shape) if isinstance(y, int) and isinstance(x, int)), a.name
    for a, b in zip(ours.get_inputs(), reference.get_inputs()):
        assert a.shape == b.shape, f"input {a.name}: {a.shape} vs onnxruntime {b.shape}"


def assert_same_outputs(reference, ours, feed):
    want = reference.run(None, feed)
    got = ours.run(None, feed)
    assert len(got) == len(want)
    for out, g, w in zip(reference.get_outputs(), got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{out.name}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=out.name)


@pytest.mark.parametrize("name", ["tiny", "simple_cnn", "resnet_block", "resnet50"])
def test_built_model(built_models, name):
    reference, ours = sessions(str(built_models / f"{name}.onnx"))
    assert_same_signature(reference, ours)
    rng = np.random.default_rng(1)
    feed = {
        i.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in i.shape]).astype(np.float32)
        for i in reference.get_inputs()
    }
    assert_same_outputs(reference, ours, feed)


def exported_inputs(spec: dict, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for name, s in spec.items():
        shape = [{"batch": batch, "seq": seq}.get(d, d) for d in s["shape"]]
        if s["dtype"] == "int64" and s.get("ones"):
            feed[name] = np.ones(shape, np.int64)
        elif s["dtype"] == "int64":
            feed[name] = rng.integers(0, s["high"], shape, dtype=np.int64)
        else:
            feed[name] = rng.standard_normal(shape).astype(np.float32) + (0.5 if seed % 2 else -0.5)
    return feed


@pytest.mark.parametrize("fixture", sorted(MANIFEST))
def test_exported_model(fixture):
    reference, ours = sessions(str(EXPORTED / fixture))
    assert_same_signature(reference, ours)
    declared = {i.name: i.shape for i in reference.get_inputs()}
    for batch, seq in [(1, 8), (3, 13)]:
        spec = {
            name: {**s, "shape": [d if isinstance(d, int) else s["shape"][k] for k, d in enumerate(declared[name])]}
            for name, s in MANIFEST[fixture]["inputs"].items()
        }
        assert_same_outputs(reference, ours, exported_inputs(spec, batch, seq, seed=batch))
