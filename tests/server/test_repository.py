"""Model repository extension: index, load (with a config override), unload, failures."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from clients import PROTOCOLS, InferenceServerException, config, connect, index, infer

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def rows(c, protocol, name):
    return [r for r in index(c, protocol) if r["name"] == name]


def wait_state(c, protocol, name, state: str, timeout: float = 20.0) -> None:
    """Waits until the index shows every version of `name` in `state`
    (tritonserver's unload returns while the model is still UNLOADING)."""
    deadline = time.time() + timeout
    while True:
        states = [r.get("state", "") for r in rows(c, protocol, name)]
        if states and all(s == state for s in states):
            return
        assert time.time() < deadline, f"{name}: {states}, expected {state}"
        time.sleep(0.05)


def test_index_lists_loaded_and_unloaded_models(protocol, endpoints):
    c = connect(protocol, endpoints)
    by_name = {}
    for r in index(c, protocol):
        by_name.setdefault(r["name"], []).append(r)
    assert {r["version"]: r["state"] for r in by_name["tiny"]} == {"1": "READY", "2": "READY"}
    # In the repository but never loaded: listed without a state.
    assert "tiny_later" in by_name
    assert by_name["tiny_later"][0].get("state", "") in ("", "UNAVAILABLE")


def test_unload_then_load(protocol, endpoints, reference):
    c = connect(protocol, endpoints)
    assert c.is_model_ready("tiny_unload")
    c.unload_model("tiny_unload")
    assert not c.is_model_ready("tiny_unload")
    with pytest.raises(InferenceServerException):
        infer(c, protocol, "tiny_unload", X)
    wait_state(c, protocol, "tiny_unload", "UNAVAILABLE")
    assert len(rows(c, protocol, "tiny_unload")) == 1
    c.load_model("tiny_unload")
    assert c.is_model_ready("tiny_unload")
    np.testing.assert_allclose(infer(c, protocol, "tiny_unload", X).as_numpy("output"), reference("tiny", X))


def test_load_with_config_override(protocol, endpoints):
    c = connect(protocol, endpoints)
    override = {
        "backend": "metal_mps",
        "max_batch_size": 2,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [4]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 2}],
    }
    try:
        c.load_model("tiny_later", config=json.dumps(override))
        cfg = config(c, protocol, "tiny_later")
        assert cfg["max_batch_size"] == 2
        assert cfg["instance_group"][0]["count"] == 2
        with pytest.raises(InferenceServerException, match="batch-size must be <= 2"):
            infer(c, protocol, "tiny_later", np.zeros((3, 4), np.float32))
        infer(c, protocol, "tiny_later", np.zeros((2, 4), np.float32))
    finally:
        c.unload_model("tiny_later")


def test_model_that_fails_to_load_reports_why_and_others_keep_serving(protocol, endpoints, reference):
    c = connect(protocol, endpoints)
    try:
        with pytest.raises(InferenceServerException) as e:
            c.load_model("corrupt")
        assert "corrupt" in e.value.message() and "load" in e.value.message().lower()
        assert not c.is_model_ready("corrupt")
        row = rows(c, protocol, "corrupt")[0]
        assert row["state"] == "UNAVAILABLE"
        assert row["reason"]
        with pytest.raises(InferenceServerException, match="corrupt"):
            infer(c, protocol, "corrupt", X)
        np.testing.assert_allclose(infer(c, protocol, "tiny", X).as_numpy("output"), reference("tiny", X))
    finally:
        c.unload_model("corrupt")


def test_serve_refuses_sequence_batching(protocol, serve_endpoints):
    """metal-mps serve has no sequence batcher, so it refuses such models and says why
    (tritonserver implements sequence batching itself and loads them)."""
    c = connect(protocol, serve_endpoints)
    try:
        with pytest.raises(InferenceServerException, match="sequence_batching"):
            c.load_model("broken")
        assert not c.is_model_ready("broken")
        row = rows(c, protocol, "broken")[0]
        assert row["state"] == "UNAVAILABLE"
        assert "sequence_batching" in row["reason"]
        with pytest.raises(InferenceServerException, match="sequence_batching"):
            infer(c, protocol, "broken", X)
    finally:
        c.unload_model("broken")


def test_unknown_model_cannot_be_loaded(protocol, endpoints):
    c = connect(protocol, endpoints)
    with pytest.raises(InferenceServerException, match="no_such_model"):
        c.load_model("no_such_model")


def test_unload_waits_for_in_flight_requests(protocol, endpoints):
    """Requests queued on a model being unloaded still get their answers."""
    c = connect(protocol, endpoints)
    c.load_model("tiny_later")
    results, errors = [], []

    def burst():
        cc = connect(protocol, endpoints)
        for _ in range(20):
            try:
                results.append(infer(cc, protocol, "tiny_later", X).as_numpy("output"))
            except InferenceServerException as e:
                errors.append(e.message())
                return

    t = threading.Thread(target=burst)
    t.start()
    c.unload_model("tiny_later")
    t.join()
    # Every answered request is complete; refusals only say the model is gone.
    for r in results:
        assert r.shape == (2, 4)
    for e in errors:
        assert "tiny_later" in e or "unload" in e, e
