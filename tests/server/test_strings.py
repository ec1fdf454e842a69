"""BYTES (STRING) tensors through both servers and both protocols: HTTP JSON, HTTP binary
(Triton's length-prefixed serialization), gRPC raw contents; batched with dynamic batching.

The expected values are numpy's own (`np.char.add`, a dict lookup), independent of the engine.
"""

from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from clients import PROTOCOLS, connect
from conftest import STRING_IDS

MODES = [("http", True), ("http", False), ("grpc", True)]


def words(batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = ["cat", "dog", "yak", "", "émeu", "a b", "x" * 300]
    return np.array([[pool[i] for i in rng.integers(0, len(pool), 3)] for _ in range(batch)], dtype=object)


def expected(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shout = np.char.add(x.astype(str), "!")
    ids = np.vectorize(lambda w: STRING_IDS.get(w, -1), otypes=[np.int64])(x)
    return shout, ids


def infer(client, protocol: str, x: np.ndarray, binary: bool):
    mod = httpclient if protocol == "http" else grpcclient
    inp = mod.InferInput("words", list(x.shape), "BYTES")
    if protocol == "http":
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [mod.InferRequestedOutput(n, binary_data=binary) for n in ("shout", "ids")]
    else:
        inp.set_data_from_numpy(x)
        outs = [mod.InferRequestedOutput(n) for n in ("shout", "ids")]
    r = client.infer("strings", [inp], outputs=outs)
    return r.as_numpy("shout"), r.as_numpy("ids")


def check(got, x):
    shout, ids = got
    want_shout, want_ids = expected(x)
    decoded = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(shout)
    np.testing.assert_array_equal(decoded.astype(str), want_shout)
    np.testing.assert_array_equal(ids, want_ids)


@pytest.fixture(scope="module")
def strings_loaded(endpoints):
    client = connect("http", endpoints)
    client.load_model("strings")
    yield endpoints
    client.unload_model("strings")


@pytest.mark.parametrize("protocol,binary", MODES)
def test_bytes_round_trip(strings_loaded, protocol, binary):
    client = connect(protocol, strings_loaded)
    for batch, seed in [(1, 0), (4, 1), (8, 2)]:
        x = words(batch, seed)
        check(infer(client, protocol, x, binary), x)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_requests_batch_together(strings_loaded, protocol):
    # Concurrent requests of different batch sizes are batched and cut back apart.
    inputs = [words(b, 10 + i) for i, b in enumerate([1, 2, 3, 1, 1])]
    client = connect(protocol, strings_loaded, concurrency=len(inputs))
    with cf.ThreadPoolExecutor(len(inputs)) as pool:
        results = list(pool.map(lambda x: infer(client, protocol, x, True), inputs))
    for got, x in zip(results, inputs):
        check(got, x)


def test_malformed_bytes_are_refused_then_served(strings_loaded):
    # A binary BYTES input whose element length runs past the data: the caller's mistake.
    import json
    import urllib.request

    http_url, _ = strings_loaded
    header = json.dumps({"inputs": [{"name": "words", "shape": [1, 3], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    body = header + (100).to_bytes(4, "little") + b"abcd"
    req = urllib.request.Request(f"http://{http_url}/v2/models/strings/infer", data=body,
                                 headers={"Inference-Header-Content-Length": str(len(header)),
                                          "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    # The next request is served.
    client = connect("http", strings_loaded)
    x = words(2, 5)
    check(infer(client, "http", x, True), x)


def test_wrong_datatype_for_a_bytes_input(strings_loaded):
    client = connect("grpc", strings_loaded)
    inp = grpcclient.InferInput("words", [1, 3], "INT64")
    inp.set_data_from_numpy(np.zeros((1, 3), np.int64))
    with pytest.raises(InferenceServerException) as e:
        client.infer("strings", [inp])
    assert "BYTES" in str(e.value)
