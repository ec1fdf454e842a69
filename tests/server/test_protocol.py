"""Health, metadata, inference, config, versions and statistics over HTTP and gRPC."""

from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest

from clients import PROTOCOLS, InferenceServerException, config, connect, infer, metadata, stats

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)


def tiny_input(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 4)).astype(np.float32)


def test_health_and_server_metadata(protocol, endpoints):
    c = connect(protocol, endpoints)
    assert c.is_server_live()
    assert c.is_server_ready()
    meta = c.get_server_metadata() if protocol == "http" else c.get_server_metadata(as_json=True)
    assert meta["name"]
    assert "binary_tensor_data" in meta["extensions"] or protocol == "grpc"
    assert "statistics" in meta["extensions"]


def test_model_metadata(protocol, endpoints):
    c = connect(protocol, endpoints)
    m = metadata(c, protocol, "tiny")
    assert m["name"] == "tiny"
    assert m["versions"] == ["1", "2"]
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata(c, protocol, "simple_cnn")["inputs"][0]["shape"] == [-1, 3, 224, 224]


def test_infer_matches_onnxruntime(protocol, endpoints, reference):
    c = connect(protocol, endpoints)
    x = tiny_input(3)
    # HTTP: JSON and binary tensor data; gRPC always sends raw tensors.
    for binary in ([False, True] if protocol == "http" else [True]):
        r = infer(c, protocol, "tiny", x, binary=binary, request_id=f"req-{binary}")
        np.testing.assert_allclose(r.as_numpy("output"), reference("tiny", x), rtol=1e-6)
        response = r.get_response()
        if protocol == "http":
            assert (response["model_name"], response["id"]) == ("tiny", f"req-{binary}")
            assert ("data" in response["outputs"][0]) != binary
        else:
            assert (response.model_name, response.id) == ("tiny", f"req-{binary}")


def test_simple_cnn_matches_onnxruntime(protocol, endpoints, reference):
    c = connect(protocol, endpoints)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    out = infer(c, protocol, "simple_cnn", x).as_numpy("output")
    assert out.shape == (2, 16, 112, 112)
    np.testing.assert_allclose(out, reference("simple_cnn", x), rtol=1e-4, atol=1e-4)


def test_versions_follow_the_policy(protocol, endpoints, reference):
    c = connect(protocol, endpoints)
    assert c.is_model_ready("tiny", "1") and c.is_model_ready("tiny", "2")
    assert not c.is_model_ready("tiny", "3")
    # latest (default): only the newest of 1, 2, 3
    assert c.is_model_ready("tiny_latest", "3")
    assert not c.is_model_ready("tiny_latest", "1")
    assert not c.is_model_ready("tiny_latest", "2")
    # specific: 1 and 3
    assert [c.is_model_ready("tiny_specific", v) for v in "123"] == [True, False, True]
    x = tiny_input(1)
    r = infer(c, protocol, "tiny", x, version="1")
    np.testing.assert_allclose(r.as_numpy("output"), reference("tiny", x), rtol=1e-6)
    with pytest.raises(InferenceServerException):
        infer(c, protocol, "tiny_latest", x, version="1")


def test_config_reports_the_pbtxt(protocol, endpoints):
    c = connect(protocol, endpoints)
    cfg = config(c, protocol, "tiny")
    assert cfg["name"] == "tiny"
    assert cfg["max_batch_size"] == 8
    assert cfg["input"][0]["name"] == "input" and cfg["input"][0]["dims"] == [4]
    assert cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    assert "dynamic_batching" in cfg
    assert "all" in cfg["version_policy"]


def test_auto_complete_fills_missing_config(protocol, endpoints, reference):
    c = connect(protocol, endpoints)
    cfg = config(c, protocol, "tiny_auto")
    assert cfg["name"] == "tiny_auto"
    assert cfg["max_batch_size"] == 4
    assert cfg["input"] == [{**cfg["input"][0], "name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert cfg["output"][0]["name"] == "output"
    assert "dynamic_batching" in cfg
    x = tiny_input(4)
    np.testing.assert_allclose(infer(c, protocol, "tiny_auto", x).as_numpy("output"), reference("tiny", x), rtol=1e-6)


def test_statistics_count_requests(protocol, endpoints):
    c = connect(protocol, endpoints)
    before = stats(c, protocol, "tiny", "2")[0]
    for _ in range(3):
        infer(c, protocol, "tiny", tiny_input(2), version="2")
    after = stats(c, protocol, "tiny", "2")[0]
    assert after["name"] == "tiny" and after["version"] == "2"
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_stats"]["compute_infer"]["ns"] > 0
    assert after["last_inference"] > 0
    every = stats(c, protocol)
    assert {(s["name"], s["version"]) for s in every} >= {("tiny", "1"), ("tiny", "2"), ("simple_cnn", "1")}


def test_dynamic_batching_visible_under_concurrent_load(protocol, endpoints, reference):
    requests = 16
    before = stats(connect(protocol, endpoints), protocol, "tiny_batched")[0]

    def one(i: int):
        c = connect(protocol, endpoints)
        x = tiny_input(1, seed=i)
        out = infer(c, protocol, "tiny_batched", x).as_numpy("output")
        np.testing.assert_allclose(out, reference("tiny", x), rtol=1e-6)

    with cf.ThreadPoolExecutor(requests) as pool:
        list(pool.map(one, range(requests)))
    after = stats(connect(protocol, endpoints), protocol, "tiny_batched")[0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == requests
    assert executions < requests, f"{executions} executions for {requests} requests: nothing was batched"
    assert max(b["batch_size"] for b in after["batch_stats"]) > 1


def test_full_queue_answers_unavailable(protocol, endpoints, reference):
    """tiny_queue1 queues one request (for 0.3 s): a burst behind it is refused."""

    def one(i: int):
        x = tiny_input(1, seed=i)
        try:
            out = infer(connect(protocol, endpoints), protocol, "tiny_queue1", x).as_numpy("output")
            np.testing.assert_allclose(out, reference("tiny", x), rtol=1e-6)
            return "ok"
        except InferenceServerException as e:
            return e.status(), e.message()

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    refused = [r for r in results if r != "ok"]
    assert refused, "no request was refused"
    assert "ok" in results
    for status, message in refused:
        assert status in ("503", "StatusCode.UNAVAILABLE"), (status, message)
        assert "queue" in message.lower()
    assert one(99) == "ok"  # still serving


def test_request_timeout_expires_in_the_queue(protocol, endpoints, reference):
    """cnn_slow holds requests up to 0.4 s for a batch; a 50 ms queue timeout expires first."""
    c = connect(protocol, endpoints)
    x = np.zeros((1, 3, 224, 224), np.float32)
    with pytest.raises(InferenceServerException) as e:
        infer(c, protocol, "cnn_slow", x, timeout=50_000)
    assert e.value.status() in ("503", "StatusCode.UNAVAILABLE")
    assert "timeout" in e.value.message().lower()
    # Without a timeout the request waits out the delay and succeeds.
    out = infer(c, protocol, "cnn_slow", x, timeout=2_000_000).as_numpy("output")
    np.testing.assert_allclose(out, reference("simple_cnn", x), rtol=1e-4, atol=1e-4)
