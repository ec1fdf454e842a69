"""Shared pieces of the hardening tests (limits, reload under traffic, request fuzzer).

`big_model` writes an ONNX model whose one FP32 input has a dynamic length (y = x + x), so a
request can be as large as a test wants; `serve_with` starts a `metal-mps serve` over a
repository holding it and the session's tiny models; `rss` reads a process's memory from /proc.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

from conftest import Server, make_repository

def big_model(repo: Path, name: str = "big", rank: int = 1) -> None:
    """repo/name: y = x + x over an FP32 tensor of `rank` dynamic dimensions (numpy checks it exactly)."""
    import onnx
    from onnx import TensorProto, helper

    dims = [f"d{i}" for i in range(rank)]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(repo / name / "1" / "model.onnx"))
    d = ", ".join(["-1"] * rank)
    (repo / name / "config.pbtxt").write_text(f"""
backend: "metal_mps"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {d} ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ {d} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
""")


def serve_with(tmp_path: Path, *args: str, models: tuple[str, ...] = ("tiny", "tiny_batched"),
               env: dict | None = None) -> Server:
    """A started `metal-mps serve` (explicit mode) with `models`, "big" (1-D) and "big2d" loaded."""
    repo = make_repository(tmp_path / "repo", list(models))
    big_model(repo)
    big_model(repo, "big2d", 2)
    load = [a for m in (*models, "big", "big2d") for a in ("--load-model", m)]
    return Server(repo, ["--model-control-mode", "explicit", *load, *args], env=env or {}).start()


def rss(pid: int, field: str = "VmRSS") -> int:
    """A memory field of /proc/<pid>/status, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def settled_rss(pid: int, samples: int = 5) -> int:
    """The least VmRSS of a few samples 20 ms apart: the memory held, without what requests in
    flight hold for a moment."""
    least = rss(pid)
    for _ in range(samples - 1):
        time.sleep(0.02)
        least = min(least, rss(pid))
    return least


def reset_peak(pid: int) -> None:
    """Resets VmHWM (the peak RSS) of `pid` to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def raw_http(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data` on a fresh connection and returns whatever comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_until_closed(s, timeout)


def read_until_closed(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    out = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        out += chunk
    return out


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP/1.1 response (0 for none)."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else 0


# A minimal HTTP/2 client by hand: enough to send a gRPC call's headers and part of its message
# and to watch which frames come back (grpcio cannot send a message slowly).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PING, H2_GOAWAY = 0, 1, 3, 4, 6, 7
H2_END_STREAM, H2_END_HEADERS, H2_ACK = 0x1, 0x4, 0x1


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name: str, value: str) -> bytes:
    """A header as HPACK's "literal without indexing, new name", without Huffman coding."""
    def text(s: str) -> bytes:
        b = s.encode()
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + text(name) + text(value)


def grpc_call_headers(method: str) -> bytes:
    return b"".join(hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", f"/inference.GRPCInferenceService/{method}"),
        (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])


def h2_frames(s: socket.socket, until: float):
    """Yields (kind, flags, stream) of each frame received before the deadline or the close,
    answering the server's PINGs (so keep-alive does not close the connection)."""
    buf = b""
    while time.time() < until:
        s.settimeout(max(0.01, until - time.time()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return
        except OSError:
            yield ("closed", 0, 0)
            return
        if not chunk:
            yield ("closed", 0, 0)
            return
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + n], buf[9 + n:]
            if kind == H2_PING and not flags & H2_ACK:
                s.sendall(h2_frame(H2_PING, H2_ACK, 0, payload))
            yield (kind, flags, stream)
