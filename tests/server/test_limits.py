"""metal-mps serve bounds memory and time per request (issue #12, items 3 and 5).

- a 60 MiB JSON request costs at most 4x its size in server memory (peak RSS growth);
- slow clients (headers or body one byte a second, a chunked body that never ends, a
  Content-Length of 10 GB) are answered or cut off after the header/body timeouts; over gRPC, a
  connection that sends nothing is closed after the header timeout and a call whose message
  stalls is ended after the body timeout;
- 500 idle connections do not starve good requests;
- the budget of bytes in flight answers 429 (HTTP) / RESOURCE_EXHAUSTED (gRPC) when spent;
- element counts that overflow are 400, not 500.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from clients import InferenceServerException
from hardening import (H2_DATA, H2_END_HEADERS, H2_END_STREAM, H2_HEADERS, H2_PREFACE, H2_RST_STREAM,
                       H2_SETTINGS, grpc_call_headers, h2_frame, h2_frames, raw_http, read_until_closed,
                       reset_peak, rss, serve_with, status_of)

TIMEOUT = 2  # --http-header-timeout-secs and --http-body-timeout-secs of the server below
MAX_INPUT = 80 * 1024 * 1024
BUDGET = MAX_INPUT + 1024 * 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = serve_with(tmp_path_factory.mktemp("limits"),
                   "--http-header-timeout-secs", str(TIMEOUT), "--http-body-timeout-secs", str(TIMEOUT),
                   "--http-max-input-size", str(MAX_INPUT), "--max-inflight-bytes", str(BUDGET))
    yield s
    assert s.stop() == 0, s.log()


def good_request(srv) -> None:
    """A tiny inference over a fresh HTTP connection; checks the answer against numpy."""
    c = httpclient.InferenceServerClient(srv.http_url, network_timeout=30)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp = httpclient.InferInput("input", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(c.infer("tiny", [inp]).as_numpy("output"), x + np.arange(1, 5))
    c.close()


def post_json(srv, body: bytes, model: str = "big") -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
    conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data else {}


def test_60mib_json_request_costs_at_most_4x_its_size(srv):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3_050_000).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [x.size],
                                   "data": x.tolist()}]}).encode()
    assert 55 << 20 < len(body) < MAX_INPUT, len(body)
    post_json(srv, json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                           "data": [1, 2]}]}).encode())
    reset_peak(srv.proc.pid)
    before = rss(srv.proc.pid)
    status, answer = post_json(srv, body)
    peak = rss(srv.proc.pid, "VmHWM")
    assert status == 200, answer
    np.testing.assert_array_equal(np.asarray(answer["outputs"][0]["data"], np.float32), x + x)
    growth = peak - before
    assert growth <= 4 * len(body), f"peak RSS grew {growth >> 20} MiB for a {len(body) >> 20} MiB body"


def test_slow_headers_are_cut_off(srv):
    with socket.create_connection(("127.0.0.1", srv.http_port)) as s:
        start = time.time()
        request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
        closed = False
        for b in request:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.25)
            if time.time() - start > 4 * TIMEOUT:
                break
        if not closed:
            s.settimeout(4 * TIMEOUT)
            try:
                closed = s.recv(1024) == b"" or True
            except OSError:
                closed = True
        elapsed = time.time() - start
    assert closed and elapsed < 4 * TIMEOUT + 1, elapsed
    good_request(srv)


def test_slow_and_endless_bodies_are_answered_408(srv):
    head = (f"POST /v2/models/big/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    # A declared body sent one byte a second, and a chunked body that never ends.
    for framing in ("Content-Length: 1000\r\n\r\n{", "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"):
        with socket.create_connection(("127.0.0.1", srv.http_port)) as s:
            start = time.time()
            s.sendall((head + framing).encode())
            stop = threading.Event()

            def drip():
                while not stop.is_set():
                    try:
                        s.sendall(b"1\r\n \r\n" if "chunked" in framing else b" ")
                    except OSError:
                        return
                    time.sleep(0.5)

            t = threading.Thread(target=drip, daemon=True)
            t.start()
            answer = read_until_closed(s, 6 * TIMEOUT)
            stop.set()
            elapsed = time.time() - start
        assert status_of(answer) == 408, answer[:300]
        assert elapsed < 3 * TIMEOUT + 1, elapsed
    good_request(srv)


def good_grpc_request(srv) -> None:
    c = grpcclient.InferenceServerClient(srv.grpc_url)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp = grpcclient.InferInput("input", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(c.infer("tiny", [inp]).as_numpy("output"), x + np.arange(1, 5))
    c.close()


def test_grpc_connection_that_sends_nothing_is_closed(srv):
    with socket.create_connection(("127.0.0.1", srv.grpc_port)) as s:
        start = time.time()
        frames = list(h2_frames(s, start + 4 * TIMEOUT))
        elapsed = time.time() - start
    assert ("closed", 0, 0) in frames and elapsed < TIMEOUT + 1.5, (frames, elapsed)
    good_grpc_request(srv)


def test_grpc_message_that_stalls_is_ended_after_the_body_timeout(srv):
    with socket.create_connection(("127.0.0.1", srv.grpc_port)) as s:
        start = time.time()
        s.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0))
        s.sendall(h2_frame(H2_HEADERS, H2_END_HEADERS, 1, grpc_call_headers("ModelInfer")))
        # The gRPC message prefix declares 1000 bytes; 2 come, then nothing (PINGs are answered).
        s.sendall(h2_frame(H2_DATA, 0, 1, b"\x00" + (1000).to_bytes(4, "big") + b"ab"))
        ended = None
        for kind, flags, stream in h2_frames(s, start + 4 * TIMEOUT):
            if stream == 1 and (kind == H2_RST_STREAM or (kind == H2_HEADERS and flags & H2_END_STREAM)):
                ended = time.time() - start
                break
            assert kind != "closed", "the connection closed instead of the call ending"
    assert ended is not None and TIMEOUT - 0.5 < ended < TIMEOUT + 1.5, ended
    good_grpc_request(srv)


def test_huge_content_length_is_refused_within_the_body_timeout(srv):
    start = time.time()
    answer = raw_http(srv.http_port, b"POST /v2/models/big/infer HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 10737418240\r\n\r\n{\"inputs\": [", timeout=10)
    assert status_of(answer) == 400 and b"maximum allowed input size" in answer, answer[:300]
    assert time.time() - start < TIMEOUT + 1
    good_request(srv)


def test_idle_connections_do_not_starve_good_requests(srv):
    idle = [socket.create_connection(("127.0.0.1", srv.http_port)) for _ in range(500)]
    try:
        # Half of them started a request and stopped.
        for s in idle[::2]:
            s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n")
        start = time.time()
        for _ in range(20):
            good_request(srv)
        assert time.time() - start < 10
    finally:
        for s in idle:
            s.close()


def test_budget_of_bytes_in_flight_answers_429_and_resource_exhausted(srv):
    # A request declaring the largest body holds all of the budget but 1 MiB while its body trickles in.
    hold = socket.create_connection(("127.0.0.1", srv.http_port))
    hold.sendall(f"POST /v2/models/big/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_INPUT}\r\n\r\n{{".encode())
    time.sleep(0.3)
    try:
        x = np.ones(512 * 1024, np.float32)
        status, answer = post_json(srv, json.dumps({"inputs": [{"name": "x", "datatype": "FP32",
                                                                "shape": [x.size], "data": x.tolist()}]}).encode())
        assert status == 429 and "max-inflight-bytes" in answer["error"], answer
        g = grpcclient.InferenceServerClient(srv.grpc_url)
        inp = grpcclient.InferInput("x", [x.size], "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as e:
            g.infer("big", [inp])
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED", e.value
    finally:
        hold.close()
    # The budget comes back once the holder is gone (its timeout, or the closed connection).
    deadline = time.time() + 3 * TIMEOUT
    while time.time() < deadline:
        status, _ = post_json(srv, json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                                            "data": [1, 2]}]}).encode())
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200


@pytest.mark.parametrize("model,shape", [("big2d", [4, 2 ** 62]), ("big2d", [2 ** 62, 8]),
                                         ("big2d", [2 ** 32, 2 ** 32]), ("big", [2 ** 40]), ("big", [2 ** 62])])
def test_shapes_that_overflow_are_400(srv, model, shape):
    """Element and byte counts are checked: no wrap-around to a small size, no 500 (JSON, binary, gRPC)."""
    status, answer = post_json(srv, json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                                                            "data": [1, 2]}]}).encode(), model=model)
    assert status == 400, answer
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    answer = raw_http(srv.http_port, f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      f"Inference-Header-Content-Length: {len(head)}\r\nContent-Length: {len(head) + 8}\r\n\r\n".encode()
                      + head + b"\0" * 8)
    assert status_of(answer) == 400, answer[:300]
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    req = service_pb2.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=shape)
    req.raw_input_contents.append(b"\0" * 8)
    with grpc.insecure_channel(srv.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as e:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value


def test_a_run_past_the_time_limit_fails_alone(tmp_path):
    # A Loop of i64::MAX trips under --max-run-secs 1: that request fails, the server lives on.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from conftest import Server, make_repository

    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])], initializer=[one])
    inits = [numpy_helper.from_array(np.array((1 << 63) - 1, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond")]
    graph = helper.make_graph([helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "endless",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    repo = make_repository(tmp_path / "repo", ["tiny"])
    (repo / "endless" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "endless" / "1" / "model.onnx"))
    (repo / "endless" / "config.pbtxt").write_text('backend: "metal_mps"\nmax_batch_size: 0\n')
    s = Server(repo, ["--model-control-mode", "explicit", "--load-model", "tiny", "--load-model", "endless",
                      "--max-run-secs", "1"]).start()
    try:
        c = httpclient.InferenceServerClient(s.http_url, network_timeout=60)
        inp = httpclient.InferInput("x", [1], "FP32")
        inp.set_data_from_numpy(np.zeros(1, np.float32))
        start = time.time()
        with pytest.raises(InferenceServerException) as e:
            c.infer("endless", [inp])
        assert "timed out" in str(e.value) and time.time() - start < 10, str(e.value)
        good_request(s)
    finally:
        assert s.stop() == 0, s.log()
