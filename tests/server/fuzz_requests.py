"""A request fuzzer for `metal-mps serve` (issue #12, item 5).

Sends malformed requests over raw HTTP/1.1 sockets and raw gRPC (malformed JSON, wrong types,
huge or negative declared shapes, binary-extension headers that lie, truncated bodies, bad and
mutated protobuf messages, traversal and junk in model names, odd headers), interleaved with
good requests (HTTP JSON, HTTP binary, gRPC) whose answers are checked against numpy. The server
must answer every complete bad request with a 4xx (never a 5xx other than 501/503, never a
hang) and must neither crash nor stop answering the good ones.

Bounded by time: `run(server, seconds)`. The test suite runs a slice of it
(tests/server/test_fuzz_requests.py, METAL_MPS_FUZZ_SECONDS); for hours, locally:

    python tests/server/fuzz_requests.py --seconds 14400 [--seed N]

which starts its own server. A failing request is written to tests/server/fuzz_crashers/
(HTTP: the raw bytes, `.http`; gRPC: the message bytes, `.grpc`), and the test suite replays
every file there as a regression case.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CRASHERS = HERE / "fuzz_crashers"

# HTTP statuses a bad request may get: caller mistakes (4xx), not implemented, unavailable.
ACCEPTED_HTTP = {200, 400, 404, 405, 408, 411, 413, 414, 415, 422, 429, 431, 501, 503}
# gRPC codes a bad message may get: everything a caller mistake can be, none of INTERNAL/UNKNOWN.
ACCEPTED_GRPC = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNIMPLEMENTED", "UNAVAILABLE",
                 "RESOURCE_EXHAUSTED", "OUT_OF_RANGE", "FAILED_PRECONDITION", "DEADLINE_EXCEEDED"}

GOOD_X = np.arange(8, dtype=np.float32).reshape(2, 4)
GOOD_Y = GOOD_X + np.arange(1, 5, dtype=np.float32)  # the "tiny" model: y = x + [1, 2, 3, 4]
MODELS = ["tiny", "big", "big2d"]
DATATYPES = ["FP32", "FP16", "BF16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT64", "BOOL",
             "BYTES", "fp32", "", "FP32\u0000", "X" * 300]
HUGE = [0, -1, -2 ** 63, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, 4, 1 << 40]
NAMES = ["../tiny", "..%2Ftiny", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "tiny%00", "tiny/../tiny", ".", "..",
         "%2e%2e", "/etc/passwd", "~root", "tiny\\..\\x", "\u00e9\u00e8", "a" * 5000, "tiny%2F1", "%ff%fe"]


@dataclass
class Report:
    bad: int = 0
    good: int = 0
    failures: list[str] = field(default_factory=list)


def good_json(x: np.ndarray = GOOD_X) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.flatten().tolist()}]}


def http_request(path: str, body: bytes, headers: dict | None = None, method: str = "POST") -> bytes:
    h = {"Host": "fuzz", "Content-Type": "application/json", "Content-Length": str(len(body)),
         "Connection": "close", **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items() if v is not None)
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


def send_http(port: int, raw: bytes, timeout: float, end_writes: bool = False) -> tuple[int | None, bytes]:
    """(status, response) of one raw request; status None when the server closed without answering.
    `end_writes`: shut the sending side after the request (a truncated body ends there)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
            if end_writes:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no answer within {timeout} s") from None
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        else:
            raise TimeoutError(f"no answer within {timeout} s")
    if not out.startswith(b"HTTP/1."):
        return None, out
    return int(out[9:12]), out


# ---- HTTP mutations: each returns (raw request bytes, whether the server may close without answering)

def m_truncated_json(rng):
    body = json.dumps(good_json()).encode()
    return http_request("/v2/models/tiny/infer", body[: rng.randrange(len(body))]), False


def m_byte_flips(rng):
    body = bytearray(json.dumps(good_json()).encode())
    for _ in range(rng.randint(1, 8)):
        body[rng.randrange(len(body))] = rng.randrange(256)
    return http_request(f"/v2/models/{rng.choice(MODELS)}/infer", bytes(body)), False


def m_wrong_types(rng):
    req = good_json()
    inp = req["inputs"][0]
    junk = rng.choice([None, "x", 3, -1.5, [], {}, [[[]]], {"a": 1}, True, "\u0000", 1e308, [None]])
    key = rng.choice(["name", "datatype", "shape", "data", "parameters", "inputs", "outputs", "id",
                      "timeout", "binary_data_output"])
    if key in ("inputs", "outputs", "id"):
        req[key] = junk
    elif key in ("timeout", "binary_data_output"):
        req["parameters"] = {key: junk}
    elif key == "data" and rng.random() < 0.5:
        inp["data"][rng.randrange(len(inp["data"]))] = junk
    else:
        inp[key] = junk
    return http_request("/v2/models/tiny/infer", json.dumps(req).encode()), False


def m_huge_shape(rng):
    model = rng.choice(MODELS)
    rank = rng.randint(0, 4)
    shape = [rng.choice(HUGE) for _ in range(rank)]
    name = "input" if model == "tiny" else "x"
    data = [1.0] * rng.choice([0, 1, 2, 8])
    if rng.random() < 0.5:
        inp = {"name": name, "datatype": rng.choice(["FP32", "INT64", "BOOL"]), "shape": shape, "data": data}
        return http_request(f"/v2/models/{model}/infer", json.dumps({"inputs": [inp]}).encode()), False
    size = rng.choice([0, 8, 16, 2 ** 62, -1, 2 ** 64])
    head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": shape,
                                   "parameters": {"binary_data_size": size}}]}).encode()
    return http_request(f"/v2/models/{model}/infer", head + b"\0" * 16,
                        {"Inference-Header-Content-Length": str(len(head))}), False


def m_lying_binary_header(rng):
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                   "parameters": {"binary_data_size": rng.choice([32, 31, 33, 0, 10 ** 12])}}],
                       "outputs": [{"name": "output", "parameters": {"binary_data": rng.choice([True, 1, "y"])}}]}).encode()
    tail = GOOD_X.tobytes()[: rng.choice([32, 16, 0])] + b"\0" * rng.choice([0, 0, 4])
    header = rng.choice([str(len(head)), str(len(head) + rng.randint(-5, 5)), "-1", "abc", str(2 ** 64),
                         str(len(head) + len(tail) + 100), " 7 ", "0x10", ""])
    return http_request("/v2/models/tiny/infer", head + tail, {"Inference-Header-Content-Length": header}), False


def m_truncated_body(rng):
    body = json.dumps(good_json()).encode()
    raw = http_request("/v2/models/tiny/infer", body, {"Content-Length": str(len(body) + rng.randint(1, 10 ** 6))})
    return raw, True


def m_bad_framing(rng):
    body = json.dumps(good_json()).encode()
    choice = rng.randrange(6)
    if choice == 0:
        return http_request("/v2/models/tiny/infer", body, {"Content-Length": "-5"}), True
    if choice == 1:
        return http_request("/v2/models/tiny/infer", body, {"Content-Length": f"{len(body)}, {len(body) + 1}"}), True
    if choice == 2:
        return http_request("/v2/models/tiny/infer", b"5\r\n{\"inp\r\nZZ\r\n", {"Content-Length": None,
                            "Transfer-Encoding": "chunked"}), True
    if choice == 3:
        return http_request("/v2/models/tiny/infer", body, {"X-Big": "a" * rng.choice([1000, 70000, 500000])}), True
    if choice == 4:
        return b"POST /v2/models/tiny/infer HTTP/1.1\r\n" + bytes(rng.randrange(256) for _ in range(200)) + b"\r\n\r\n", True
    return http_request("/v2/models/tiny/infer", body, {"Content-Type": "text/plain; charset=\u00ff"}), True


def m_traversal(rng):
    name = rng.choice(NAMES) + rng.choice(["", "/", "/../../", "%2F..%2F"])
    route = rng.choice(["/v2/models/{}/infer", "/v2/models/{}", "/v2/models/{}/config", "/v2/models/{}/ready",
                        "/v2/models/{}/stats", "/v2/models/{}/versions/1/infer", "/v2/repository/models/{}/load",
                        "/v2/repository/models/{}/unload", "/v2/models/tiny/versions/{}/infer"])
    method = "GET" if route.count("/") == 3 or route.endswith(("config", "ready", "stats")) else "POST"
    body = json.dumps(rng.choice([good_json(), {}, {"parameters": {"config": json.dumps(
        {"default_model_filename": rng.choice(["/etc/passwd", "../../tiny/1/model.onnx", "x"]),
         "backend": "metal_mps"})}}])).encode() if method == "POST" else b""
    path = route.format(name)
    return http_request(path.replace(" ", "%20"), body, method=method), False


def m_deep_nesting(rng):
    depth = rng.choice([200, 5000, 100000])
    data = "[" * depth + "1" + "]" * depth
    body = f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": {data}}}]}}'.encode()
    if rng.random() < 0.5:
        body = ("[" * depth).encode()
    return http_request("/v2/models/tiny/infer", body), False


def m_control_bodies(rng):
    path = rng.choice(["/v2/repository/index", "/v2/repository/models/corrupt_name/load", "/v2/health/ready", "/v2"])
    body = rng.choice([b"{", b"[]", b'{"ready": 3}', b'{"parameters": {"config": "{"}}', b"\xff\xfe",
                       b'{"parameters": {"config": 5, "file:1/model.onnx": "AAAA"}}', b" " * 100])
    return http_request(path, body, method=rng.choice(["POST", "GET", "PUT", "DELETE"])), False


HTTP_MUTATIONS = [m_truncated_json, m_byte_flips, m_wrong_types, m_huge_shape, m_lying_binary_header,
                  m_truncated_body, m_bad_framing, m_traversal, m_deep_nesting, m_control_bodies]


# ---- gRPC

def _grpc_message(rng) -> bytes:
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=rng.choice(MODELS + NAMES[:4]), id="fuzz")
    inp = req.inputs.add(name=rng.choice(["input", "x", "nope", ""]), datatype=rng.choice(DATATYPES[:12]),
                         shape=[rng.choice(HUGE + [2, 4]) for _ in range(rng.randint(0, 3))])
    kind = rng.randrange(4)
    if kind == 0:
        req.raw_input_contents.append(bytes(rng.randrange(256) for _ in range(rng.choice([0, 8, 32, 33]))))
    elif kind == 1:
        inp.contents.fp32_contents.extend([1.0] * rng.choice([0, 8, 9]))
    elif kind == 2:
        inp.contents.int_contents.extend([rng.choice([0, 2 ** 31 - 1, -(2 ** 31)])] * 8)
        req.raw_input_contents.append(b"\0" * 32)
    else:
        req.raw_input_contents.extend([b"\0" * 32, b"\0" * 32])
    if rng.random() < 0.3:
        req.parameters["timeout"].string_param = "soon"
    msg = req.SerializeToString()
    if rng.random() < 0.4:
        # Break the protobuf itself: flip bytes, cut it, or send noise.
        msg = bytearray(msg)
        for _ in range(rng.randint(1, 6)):
            if msg:
                msg[rng.randrange(len(msg))] = rng.randrange(256)
        msg = bytes(msg[: rng.randrange(len(msg) + 1)]) if rng.random() < 0.5 else bytes(msg)
    if rng.random() < 0.1:
        msg = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    return msg


def send_grpc(channel, msg: bytes, timeout: float) -> str:
    import grpc

    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(msg, timeout=timeout)
        return "OK"
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise TimeoutError(f"gRPC: no answer within {timeout} s") from None
        return e.code().name


# ---- good traffic

def check_good(http_port: int, channel, rng, timeout: float) -> None:
    """One good request of a random kind; raises AssertionError on a wrong or missing answer."""
    kind = rng.randrange(3)
    if kind == 0:
        status, raw = send_http(http_port, http_request("/v2/models/tiny/infer", json.dumps(good_json()).encode()),
                                timeout)
        assert status == 200, raw[:500]
        body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
        np.testing.assert_array_equal(np.asarray(body["outputs"][0]["data"], np.float32).reshape(2, 4), GOOD_Y)
    elif kind == 1:
        head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                       "parameters": {"binary_data_size": 32}}],
                           "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
        status, raw = send_http(http_port, http_request("/v2/models/tiny/infer", head + GOOD_X.tobytes(),
                                                         {"Inference-Header-Content-Length": str(len(head))}), timeout)
        assert status == 200, raw[:500]
        headers, body = raw.split(b"\r\n\r\n", 1)
        n = int(next(line.split(b":")[1] for line in headers.split(b"\r\n")
                     if line.lower().startswith(b"inference-header-content-length")))
        np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32).reshape(2, 4), GOOD_Y)
    else:
        from tritonclient.grpc import service_pb2

        req = service_pb2.ModelInferRequest(model_name="tiny")
        req.inputs.add(name="input", datatype="FP32", shape=[2, 4])
        req.raw_input_contents.append(GOOD_X.tobytes())
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        resp = service_pb2.ModelInferResponse.FromString(call(req.SerializeToString(), timeout=timeout))
        np.testing.assert_array_equal(np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(2, 4), GOOD_Y)


def save_crasher(kind: str, data: bytes) -> Path:
    CRASHERS.mkdir(exist_ok=True)
    import hashlib

    path = CRASHERS / f"{hashlib.sha1(data).hexdigest()[:16]}.{kind}"
    path.write_bytes(data)
    return path


def judge_http(port: int, raw: bytes, may_close: bool, timeout: float) -> str | None:
    """None when the server's answer to `raw` is acceptable, else what was wrong."""
    try:
        status, answer = send_http(port, raw, timeout, end_writes=may_close)
    except TimeoutError as e:
        return str(e)
    except OSError as e:
        return None if may_close else f"connection error {e}"
    if status is None:
        return None if may_close else f"closed without an answer: {answer[:200]!r}"
    if status not in ACCEPTED_HTTP:
        return f"HTTP {status}: {answer[:300]!r}"
    return None


def judge_grpc(channel, msg: bytes, timeout: float) -> str | None:
    try:
        code = send_grpc(channel, msg, timeout)
    except TimeoutError as e:
        return str(e)
    return None if code in ACCEPTED_GRPC else f"gRPC {code}"


def run(http_port: int, grpc_url: str, seconds: float, seed: int, alive=lambda: True,
        timeout: float = 20.0) -> Report:
    """Fuzzes for `seconds`; a good request after every few bad ones."""
    import grpc

    rng = random.Random(seed)
    report = Report()
    deadline = time.time() + seconds
    with grpc.insecure_channel(grpc_url) as channel:
        while time.time() < deadline and len(report.failures) < 20:
            if rng.random() < 0.75:
                mutate = rng.choice(HTTP_MUTATIONS)
                raw, may_close = mutate(rng)
                problem = judge_http(http_port, raw, may_close, timeout)
                if problem:
                    report.failures.append(f"{mutate.__name__}: {problem} ({save_crasher('http', raw).name})")
            else:
                msg = _grpc_message(rng)
                problem = judge_grpc(channel, msg, timeout)
                if problem:
                    report.failures.append(f"grpc: {problem} ({save_crasher('grpc', msg).name})")
            report.bad += 1
            if report.bad % 4 == 0:
                try:
                    check_good(http_port, channel, rng, timeout)
                    report.good += 1
                except Exception as e:  # noqa: BLE001 (any failure of a good request is reported)
                    report.failures.append(f"good request failed: {type(e).__name__}: {str(e)[:300]}")
            if not alive():
                report.failures.append("the server exited")
                break
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import tempfile

    from hardening import serve_with

    with tempfile.TemporaryDirectory() as tmp:
        srv = serve_with(Path(tmp), *FUZZ_SERVER_ARGS)
        try:
            report = run(srv.http_port, srv.grpc_url, args.seconds, args.seed,
                         alive=lambda: srv.proc.poll() is None)
        finally:
            code = srv.stop()
        print(f"seed {args.seed}: {report.bad} bad and {report.good} good requests, "
              f"{len(report.failures)} failures; server exit code {code}")
        for f in report.failures:
            print("  ", f)
        return 1 if report.failures or code != 0 else 0


# Short time limits, so truncated bodies and slow requests end quickly.
FUZZ_SERVER_ARGS = ("--http-header-timeout-secs", "2", "--http-body-timeout-secs", "2")


if __name__ == "__main__":
    sys.exit(main())
