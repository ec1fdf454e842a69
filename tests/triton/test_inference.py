"""Results through Triton equal onnxruntime's, over HTTP and gRPC, for configured
and auto-completed models."""

import http.client as http_client
import json
import re

import numpy as np
from conftest import CNN_IN, CNN_OUT, DEFAULT_MAX_BATCH_SIZE, RES_IN, assert_close, image, infer_grpc, infer_http


def test_spec_config_http_and_grpc(load, http, grpc, reference):
    load("simple_cnn")
    x = image(batch=2, seed=1)
    expected = reference("simple_cnn", x)
    assert_close(infer_http(http, "simple_cnn", x).as_numpy("output"), expected)
    assert_close(infer_grpc(grpc, "simple_cnn", x).as_numpy("output"), expected)


def test_resnet_block(load, http, grpc, reference):
    load("resnet_block")
    x = image(batch=1, shape=RES_IN, seed=2)
    expected = reference("resnet_block", x)
    assert_close(infer_http(http, "resnet_block", x).as_numpy("output"), expected)
    assert_close(infer_grpc(grpc, "resnet_block", x).as_numpy("output"), expected)


def check_auto_completed(config: dict) -> None:
    assert config["backend"] == "metal_mps"
    assert config["max_batch_size"] == DEFAULT_MAX_BATCH_SIZE
    assert "dynamic_batching" in config
    (inp,) = config["input"]
    (out,) = config["output"]
    assert (inp["name"], inp["data_type"], [int(d) for d in inp["dims"]]) == ("input", "TYPE_FP32", CNN_IN)
    assert (out["name"], out["data_type"], [int(d) for d in out["dims"]]) == ("output", "TYPE_FP32", CNN_OUT)


def test_auto_complete_from_partial_config(load, http, reference):
    load("partial_cnn")
    check_auto_completed(http.get_model_config("partial_cnn"))
    x = image(seed=3)
    assert_close(infer_http(http, "partial_cnn", x).as_numpy("output"), reference("simple_cnn", x))


def test_auto_complete_without_config_pbtxt(server, load, http, reference):
    """No config.pbtxt: Triton would pick onnxruntime for model.onnx, so the load request names the backend."""
    assert not (server.repo / "auto_cnn" / "config.pbtxt").exists()
    load("auto_cnn", config={"backend": "metal_mps"})
    check_auto_completed(http.get_model_config("auto_cnn"))
    x = image(batch=DEFAULT_MAX_BATCH_SIZE, seed=4)
    assert_close(infer_http(http, "auto_cnn", x).as_numpy("output"), reference("simple_cnn", x))


def test_requested_output_subset_and_binary_json(load, http, reference):
    load("simple_cnn")
    x = image(seed=5)
    result = infer_http(http, "simple_cnn", x, outputs=["output"])
    assert_close(result.as_numpy("output"), reference("simple_cnn", x))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["output"]


def test_unbatched_model_takes_full_shapes(load, http, reference):
    load("unbatched_cnn")
    for batch in (1, 3):
        x = image(batch=batch, seed=6 + batch)
        assert_close(infer_http(http, "unbatched_cnn", x).as_numpy("output"), reference("simple_cnn", x))


def test_model_versions_and_default_model_filename(load, http, reference):
    load("versioned_cnn")
    x = image(seed=9)
    for version in ("1", "2"):
        assert http.is_model_ready("versioned_cnn", version)
        assert_close(infer_http(http, "versioned_cnn", x, version=version).as_numpy("output"), reference("simple_cnn", x))


def test_engine_parameters_are_accepted(server, load, http, reference):
    """precision fp16 (the CPU engine computes in FP32), pool cap and buffer age."""
    load("fp16_cnn")
    x = image(seed=10)
    assert_close(infer_http(http, "fp16_cnn", x).as_numpy("output"), reference("simple_cnn", x), tol=2e-2)
    assert "model 'fp16_cnn' version 1: loaded" in server.log_text()


def test_config_endpoint_is_json(http, load):
    load("simple_cnn")
    cfg = http.get_model_config("simple_cnn")
    json.dumps(cfg)
    assert cfg["instance_group"][0]["kind"] == "KIND_MODEL"
    assert np.prod([int(d) for d in cfg["output"][0]["dims"]]) == 16 * 112 * 112


def test_input_split_across_many_buffers(server, load, reference):
    """A chunked HTTP body reaches the backend as many input buffers; they are gathered in order."""
    load("batched_cnn")
    x = image(seed=11)
    header = json.dumps({
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
    }).encode()
    body = header + x.tobytes()
    conn = http_client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    conn.request(
        "POST", "/v2/models/batched_cnn/infer",
        body=(body[i:i + 16384] for i in range(0, len(body), 16384)), encode_chunked=True,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    response = conn.getresponse()
    payload = response.read()
    assert response.status == 200, payload[:500]
    json_size = int(response.getheader("Inference-Header-Content-Length"))
    meta = json.loads(payload[:json_size])
    y = np.frombuffer(payload[json_size:], np.float32).reshape(meta["outputs"][0]["shape"])
    assert_close(y, reference("simple_cnn", x))
    pieces = [int(n) for n in re.findall(r"model 'batched_cnn' instance '[^']+': 1 request\(s\), 0 in error, (\d+) input buffer",
                                         server.log_text())]
    assert max(pieces) > 1, pieces
