"""Bad requests get a clear error (HTTP) / INVALID_ARGUMENT-like code (gRPC), and the server keeps serving.

Runs against both servers (`endpoints`): the list below is the shared list of bad
requests, and both must answer each with the same status, except where
TRITON_STATUS says otherwise (the README's "Limits of metal-mps serve" explains
each difference). Their wording differs: each case lists words of which the
error must name one.
"""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clients import InferenceServerException, connect, infer
from conftest import MAX_INPUT_SIZE


def post(endpoints, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    host, port = endpoints[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if data else {})


def tiny_request(datatype="FP32", shape=(1, 4), data=None) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": list(shape),
                                   "data": data if data is not None else [1, 2, 3, 4]}]}).encode()


def still_serving(endpoints):
    status, body = post(endpoints, "/v2/models/tiny/infer", tiny_request())
    assert status == 200, body
    assert body["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


# Where tritonserver's status differs from ours: the case's first word -> tritonserver's status.
TRITON_STATUS = {
    "parse": 500, "elements": 500, "FP32": 500, "negative": 500,
}


@pytest.mark.parametrize(
    "path,body,status,words",
    [
        ("/v2/models/tiny/infer", b'{"inputs": [', 400, ("parse",)),
        ("/v2/models/tiny/infer", b'{"inputs": 3}', 400, ("parse",)),
        ("/v2/models/tiny/infer", tiny_request(datatype="INT64"), 400, ("data-type",)),
        ("/v2/models/tiny/infer", tiny_request(shape=(1, 5), data=[1] * 5), 400, ("shape",)),
        ("/v2/models/tiny/infer", tiny_request(shape=(9, 4), data=[1] * 36), 400, ("batch-size",)),
        ("/v2/models/tiny/infer", tiny_request(data=[1, 2, 3]), 400, ("elements", "shape")),
        ("/v2/models/tiny/infer", tiny_request(data=["a", "b", "c", "d"]), 400, ("FP32", "number")),
        ("/v2/models/no_such_model/infer", tiny_request(), 404, ("unknown model",)),
        ("/v2/models/tiny/versions/7/infer", tiny_request(), 404, ("version 7", "7")),
        ("/v2/models/tiny/versions/x/infer", tiny_request(), 404, ("version", "not found")),
        ("/v2/models/tiny/infer",
         json.dumps({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}).encode(),
         400, ("nope",)),
        ("/v2/models/tiny/infer",
         json.dumps({"inputs": json.loads(tiny_request())["inputs"], "outputs": [{"name": "nope"}]}).encode(),
         400, ("nope",)),
        ("/v2/models/tiny/infer", tiny_request(shape=(-1, 4)), 400, ("negative", "shape")),
        ("/v2/models/tiny/infer", tiny_request(shape=(2 ** 62, 4)), 400, ("batch-size", "size", "more elements")),
        ("/v2/models/tiny/infer", tiny_request(datatype="FP99"), 400, ("data-type", "datatype", "FP99")),
    ],
    ids=["json-syntax", "json-shape", "datatype", "shape", "batch-size", "elements", "not-a-number",
         "unknown-model", "unknown-version", "bad-version", "unknown-input", "unknown-output",
         "negative-dim", "huge-batch", "unknown-datatype"],
)
def test_http_bad_request_is_a_clear_error(endpoints, path, body, status, words):
    got, answer = post(endpoints, path, body)
    if endpoints.kind == "tritonserver":
        status = TRITON_STATUS.get(words[0], status)
    assert got == status, answer
    assert any(w.lower() in answer["error"].lower() for w in words), answer
    still_serving(endpoints)


def test_http_binary_data_mismatch(endpoints):
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                   "parameters": {"binary_data_size": 16}}]}).encode()
    # 12 bytes where 16 are declared.
    status, answer = post(endpoints, "/v2/models/tiny/infer", head + b"\0" * 12,
                          {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and ("binary" in answer["error"] or "size" in answer["error"]), answer
    # Extra bytes after the declared input.
    status, answer = post(endpoints, "/v2/models/tiny/infer", head + b"\0" * 20,
                          {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "additional" in answer["error"], answer
    still_serving(endpoints)


def test_http_oversized_body_is_refused(serve_endpoints):
    """Serve only: its limit is --http-max-input-size; tritonserver 2.51 has a fixed 64 MiB limit."""
    endpoints = serve_endpoints
    body = b"{" + b" " * (MAX_INPUT_SIZE + 1024) + b"}"
    status, answer = post(endpoints, "/v2/models/tiny/infer", body)
    assert status == 400, answer
    assert "maximum allowed input size" in answer["error"]
    still_serving(endpoints)


def test_http_unknown_route_and_method(endpoints):
    host, port = endpoints[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/v2/models/tiny/infer")
    r = conn.getresponse()
    assert r.status == 405 and "error" in json.loads(r.read())
    conn.request("GET", "/v3/nothing")
    r = conn.getresponse()
    assert r.status == 404 and "error" in json.loads(r.read())
    conn.close()


def test_grpc_bad_requests(endpoints):
    c = connect("grpc", endpoints)

    def code(model, x, dtype="FP32", version=""):
        inp = grpcclient.InferInput("input", list(x.shape), dtype)
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as e:
            c.infer(model, [inp], model_version=version)
        return e.value.status(), e.value.message()

    status, msg = code("tiny", np.zeros((1, 4), np.int64), "INT64")
    assert status == "StatusCode.INVALID_ARGUMENT" and "data-type" in msg
    status, msg = code("tiny", np.zeros((1, 5), np.float32))
    assert status == "StatusCode.INVALID_ARGUMENT" and "shape" in msg
    status, msg = code("no_such_model", np.zeros((1, 4), np.float32))
    assert status == "StatusCode.NOT_FOUND" and "unknown model" in msg.lower()
    status, msg = code("tiny", np.zeros((1, 4), np.float32), version="9")
    assert status == "StatusCode.NOT_FOUND"
    big = np.zeros((1, MAX_INPUT_SIZE // 4 + 16), np.float32)
    status, msg = code("tiny", big)
    assert status in ("StatusCode.RESOURCE_EXHAUSTED", "StatusCode.OUT_OF_RANGE", "StatusCode.INVALID_ARGUMENT"), msg
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(infer(c, "grpc", "tiny", x).as_numpy("output"), x + np.arange(1, 5))


def test_grpc_typed_contents(endpoints):
    """Inputs in typed InferTensorContents (not raw) work too; answers are raw, as Triton's."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(endpoints[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="tiny", id="typed-1")
        inp = req.inputs.add(name="input", datatype="FP32", shape=[2, 4])
        inp.contents.fp32_contents.extend([1, 2, 3, 4, 5, 6, 7, 8])
        resp = stub.ModelInfer(req)
        assert resp.id == "typed-1" and resp.model_version == "2"
        out = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))
        np.testing.assert_allclose(out, np.arange(1, 9, dtype=np.float32).reshape(2, 4) + np.arange(1, 5))
        inp.contents.fp32_contents.pop()
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "elements" in e.value.details() or "size" in e.value.details(), e.value.details()
