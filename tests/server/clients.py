"""One face for tritonclient's HTTP and gRPC clients, so each test runs on both."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException  # noqa: F401 (re-exported for tests)

PROTOCOLS = ["http", "grpc"]


def connect(protocol: str, endpoints: tuple[str, str], concurrency: int = 1):
    http_url, grpc_url = endpoints
    if protocol == "http":
        return httpclient.InferenceServerClient(http_url, concurrency=concurrency, network_timeout=120)
    return grpcclient.InferenceServerClient(grpc_url)


def module(protocol: str):
    return httpclient if protocol == "http" else grpcclient


def infer(client, protocol: str, model: str, x: np.ndarray, version: str = "", binary: bool = True,
          outputs: list[str] | None = None, **kwargs):
    """Runs `model` on input "input" = x; returns the result object."""
    mod = module(protocol)
    inp = mod.InferInput("input", list(x.shape), _dtype(x))
    if protocol == "http":
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [mod.InferRequestedOutput(o, binary_data=binary) for o in (outputs or ["output"])]
    else:
        inp.set_data_from_numpy(x)
        outs = [mod.InferRequestedOutput(o) for o in (outputs or ["output"])]
    return client.infer(model, [inp], model_version=version, outputs=outs, **kwargs)


def _dtype(x: np.ndarray) -> str:
    return {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.int32: "INT32",
            np.float16: "FP16", np.bool_: "BOOL", np.uint8: "UINT8"}[x.dtype.type]


def config(client, protocol: str, model: str, version: str = "") -> dict:
    """The model config as a dict with Triton's field names and integer dims."""
    if protocol == "http":
        return client.get_model_config(model, version)
    c = client.get_model_config(model, version, as_json=True)["config"]
    # protobuf's JSON writes 64-bit integers as strings.
    for t in c.get("input", []) + c.get("output", []):
        t["dims"] = [int(d) for d in t.get("dims", [])]
    return c


def stats(client, protocol: str, model: str = "", version: str = "") -> list[dict]:
    """model_stats entries with integer counters."""
    if protocol == "http":
        return client.get_inference_statistics(model, version)["model_stats"]
    s = client.get_inference_statistics(model, version, as_json=True).get("model_stats", [])
    for m in s:
        for k in ("inference_count", "execution_count", "last_inference"):
            m[k] = int(m.get(k, 0))
        for d in m.get("inference_stats", {}).values():
            d["count"] = int(d.get("count", 0))
            d["ns"] = int(d.get("ns", 0))
        for b in m.get("batch_stats", []):
            b["batch_size"] = int(b["batch_size"])
            b["compute_infer"]["count"] = int(b["compute_infer"].get("count", 0))
    return s


def metadata(client, protocol: str, model: str, version: str = "") -> dict:
    if protocol == "http":
        return client.get_model_metadata(model, version)
    m = client.get_model_metadata(model, version, as_json=True)
    for t in m.get("inputs", []) + m.get("outputs", []):
        t["shape"] = [int(d) for d in t["shape"]]
    return m


def index(client, protocol: str) -> list[dict]:
    if protocol == "http":
        return client.get_model_repository_index()
    return client.get_model_repository_index(as_json=True).get("models", [])
