"""Unload/load and reload under traffic (issue #12, item 4).

A few client threads (real tritonclient, HTTP and gRPC) send requests without pause while the
test unloads and loads the model 100 times, then reloads it 100 times with alternating configs.
A request the server accepted must complete with the right answer; while the model is unloaded
a request may only be refused with "unknown/unavailable/not ready". During reloads nothing may
fail at all: the old version serves until the new one is ready. Server RSS does not grow cycle
after cycle: after cycle 100 it is within 5 % of cycle 10, or within 1 % of cycle 55 (a one-time
step, such as an allocator arena growing under load, is not a leak; a steady leak fails both).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

from clients import InferenceServerException, connect, infer
from hardening import read_until_closed, serve_with, settled_rss, status_of

CYCLES = 100
X = np.arange(8, dtype=np.float32).reshape(2, 4)
EXPECTED = X + np.arange(1, 5, dtype=np.float32)

# While unloaded, a refusal names the model and why it cannot run (Triton's wordings). "model is
# being unloaded" is not among them: that is a request that had been accepted, then failed.
REFUSALS = ("unknown model", "no available versions", "not at ready state")

CONFIGS = [
    {"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}],
     "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [4]}],
     "instance_group": [{"kind": "KIND_CPU", "count": 1}]},
    {"max_batch_size": 4, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}],
     "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [4]}],
     "instance_group": [{"kind": "KIND_CPU", "count": 2}], "dynamic_batching": {}},
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # Two malloc arenas (as the tritonserver fixture runs): per-thread arenas would make RSS
    # jump by whole arenas as instance threads come and go, hiding a leak or faking one.
    s = serve_with(tmp_path_factory.mktemp("reload"), models=("tiny",), env={"MALLOC_ARENA_MAX": "2"})
    yield s
    assert s.stop() == 0, s.log()


class Traffic:
    """Client threads inferring on "tiny" until stopped; counts answers and sorts failures."""

    def __init__(self, srv, threads: int = 3):
        self.stop = threading.Event()
        self.ok = 0
        self.refused: list[str] = []
        self.failed: list[str] = []
        self.lock = threading.Lock()
        protocols = ["http", "grpc", "http", "grpc"][:threads]
        self.threads = [threading.Thread(target=self.run, args=(srv, p), daemon=True) for p in protocols]

    def run(self, srv, protocol: str) -> None:
        c = connect(protocol, (srv.http_url, srv.grpc_url))
        while not self.stop.is_set():
            try:
                out = infer(c, protocol, "tiny", X).as_numpy("output")
            except InferenceServerException as e:
                with self.lock:
                    msg = e.message() or str(e)
                    (self.refused if any(r in msg.lower() for r in REFUSALS) else self.failed).append(msg)
                continue
            with self.lock:
                if out is not None and np.array_equal(out, EXPECTED):
                    self.ok += 1
                else:
                    self.failed.append(f"wrong answer {out!r}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


MARKS = (10, CYCLES // 2 + 5, CYCLES)


def assert_no_leak(marks: dict[int, int]) -> None:
    first, middle, last = (marks[c] for c in MARKS)
    assert last <= first * 1.05 or last <= middle * 1.01, (
        f"RSS {first >> 10} KiB at cycle {MARKS[0]}, {middle >> 10} KiB at {MARKS[1]}, {last >> 10} KiB at {MARKS[2]}")


def test_unload_load_cycles_under_traffic(srv):
    admin = connect("http", (srv.http_url, srv.grpc_url))
    marks = {}
    with Traffic(srv) as traffic:
        for cycle in range(1, CYCLES + 1):
            admin.unload_model("tiny")
            admin.load_model("tiny")
            if cycle in MARKS:
                marks[cycle] = settled_rss(srv.proc.pid)
    assert not traffic.failed, traffic.failed[:5]
    assert traffic.ok > CYCLES, (traffic.ok, len(traffic.refused))
    assert_no_leak(marks)


def test_reloads_under_traffic_fail_nothing(srv):
    admin = connect("http", (srv.http_url, srv.grpc_url))
    marks = {}
    with Traffic(srv) as traffic:
        for cycle in range(1, CYCLES + 1):
            admin.load_model("tiny", config=json.dumps(CONFIGS[cycle % 2]))
            if cycle in MARKS:
                marks[cycle] = settled_rss(srv.proc.pid)
    assert not traffic.failed and not traffic.refused, (traffic.failed[:5], traffic.refused[:5])
    assert traffic.ok > CYCLES
    assert admin.get_model_config("tiny")["max_batch_size"] == CONFIGS[CYCLES % 2]["max_batch_size"]
    assert_no_leak(marks)


@pytest.mark.parametrize("operation", ["unload", "reload"])
def test_request_accepted_before_an_unload_or_reload_completes(srv, operation):
    """A request whose headers and half its body arrived before the unload/reload gets its answer."""
    admin = connect("http", (srv.http_url, srv.grpc_url))
    admin.load_model("tiny")
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                   "data": X.flatten().tolist()}]}).encode()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=30) as s:
        s.sendall(f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)

        def change():
            if operation == "unload":
                admin2 = connect("http", (srv.http_url, srv.grpc_url))
                admin2.unload_model("tiny")
            else:
                admin2 = connect("http", (srv.http_url, srv.grpc_url))
                admin2.load_model("tiny", config=json.dumps(CONFIGS[1]))

        t = threading.Thread(target=change)
        t.start()
        time.sleep(0.5)
        s.sendall(body[10:])
        answer = read_until_closed(s, 30)
        t.join(30)
    assert status_of(answer) == 200, answer[:500]
    out = json.loads(answer.split(b"\r\n\r\n", 1)[1])["outputs"][0]["data"]
    np.testing.assert_array_equal(np.asarray(out, np.float32).reshape(2, 4), EXPECTED)
    admin.load_model("tiny")
