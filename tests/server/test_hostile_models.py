"""Hostile models through the load API of both servers: a model that cannot load is
UNAVAILABLE with its reason and the server goes on serving; no model or load request reads a
file outside the model's version folder, and a refusal does not tell whether a path exists."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from clients import PROTOCOLS, InferenceServerException, connect, index, infer
from conftest import MODELS

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

X = np.arange(8, dtype=np.float32).reshape(2, 4)
CONFIG = 'backend: "metal_mps"\nmax_batch_size: 0\n'


@pytest.fixture
def repo(request, protocol, endpoints):
    """The shared server's repository; the models a test adds are unloaded and removed after it
    (a model left UNAVAILABLE would make the server not ready for the tests that follow)."""
    fixture = "triton_server" if endpoints.kind == "tritonserver" else "server"
    root = Path(request.getfixturevalue(fixture).repo)
    before = {p.name for p in root.iterdir()}
    yield root
    # tritonserver keeps a model whose load failed UNAVAILABLE (and itself not ready) through
    # an unload: a good load and an unload leave it "unloaded", as the other tests expect.
    c = connect(protocol, endpoints)
    for name in {p.name for p in root.iterdir()} - before:
        shutil.rmtree(root / name)
        add_model(root, name, (MODELS / "tiny.onnx").read_bytes())
        c.load_model(name)
        c.unload_model(name)
        shutil.rmtree(root / name)


def model_bytes(nodes, inputs, outputs, initializers=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def huge_reshape() -> bytes:
    """A Reshape whose shape input is declared with 2^31 elements (once: a 51 GB allocation, SIGABRT)."""
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [4])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [1 << 31])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])
    return model_bytes([helper.make_node("Reshape", ["data", "shape"], ["out"])], [data, shape], [out])


def external_weights(location: str) -> bytes:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [4])
    return model_bytes([helper.make_node("Add", ["input", "w"], ["output"])], [x], [y], [w])


def add_model(repo: Path, name: str, model: bytes | str | None, config: str = CONFIG) -> Path:
    """<repo>/<name>/1/model.onnx: bytes, or a symlink to `model` when a str."""
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config)
    if isinstance(model, str):
        os.symlink(model, version / "model.onnx")
    elif model is not None:
        (version / "model.onnx").write_bytes(model)
    return version


def load_error(c, name: str, **kw) -> str:
    with pytest.raises(InferenceServerException) as e:
        c.load_model(name, **kw)
    return e.value.message()


def assert_unavailable_and_serving(c, protocol, name: str, reason: str, reference) -> None:
    assert not c.is_model_ready(name)
    row = [r for r in index(c, protocol) if r["name"] == name][0]
    assert row["state"] == "UNAVAILABLE"
    assert reason in row["reason"], row["reason"]
    np.testing.assert_allclose(infer(c, protocol, "tiny", X[:1]).as_numpy("output"), reference("tiny", X[:1]))


def test_model_whose_inference_would_abort_is_unavailable(protocol, endpoints, repo, reference):
    name = f"huge_reshape_{protocol}"
    add_model(repo, name, huge_reshape())
    c = connect(protocol, endpoints)
    msg = load_error(c, name)
    assert "rank" in msg, msg
    assert_unavailable_and_serving(c, protocol, name, "rank", reference)


def test_model_file_linked_outside_the_version_folder(protocol, endpoints, repo, reference):
    c = connect(protocol, endpoints)
    outside = f"linked_outside_{protocol}"
    missing = f"linked_missing_{protocol}"
    add_model(repo, outside, str((MODELS / "tiny.onnx").resolve()))
    add_model(repo, missing, "/no/such/model.onnx")
    m_outside, m_missing = load_error(c, outside), load_error(c, missing)
    assert "inside" in m_outside, m_outside
    assert m_outside.replace(outside, "X") == m_missing.replace(missing, "X")
    assert_unavailable_and_serving(c, protocol, outside, "inside", reference)


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/no-such-file"])
def test_external_data_linked_outside(protocol, endpoints, repo, reference, target):
    name = f"ext_{protocol}_{Path(target).name.replace('-', '_')}"
    version = add_model(repo, name, external_weights("weights.bin"))
    os.symlink(target, version / "weights.bin")
    c = connect(protocol, endpoints)
    msg = load_error(c, name)
    assert "inside the model's folder" in msg and "root:" not in msg, msg
    assert_unavailable_and_serving(c, protocol, name, "inside the model's folder", reference)


def test_absolute_default_model_filename_in_a_load_override(protocol, endpoints):
    c = connect(protocol, endpoints)
    messages = []
    for path in [str((MODELS / "tiny.onnx").resolve()), "/etc/shadow", "/no/such/file.onnx"]:
        override = {"backend": "metal_mps", "max_batch_size": 8, "default_model_filename": path,
                    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}],
                    "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [4]}]}
        msg = load_error(c, "tiny_later", config=json.dumps(override))
        assert "file name" in msg, msg
        messages.append(msg.replace(path, "P"))
        assert not c.is_model_ready("tiny_later")
    assert len(set(messages)) == 1, messages
    # A good load, then an unload, leaves tiny_later as the other tests expect it.
    c.load_model("tiny_later")
    c.unload_model("tiny_later")
