"""Fixtures for the Triton backend tests: the real tritonserver from the PyPI wheel
nvidia-pytriton==0.7.0 loading libtriton_metal_mps.so, on loopback, on free ports.

One server serves the whole session in explicit model-control mode; each test
loads the models it needs from a repository written once (see `MODELS`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "triton"))

import triton_env as te  # noqa: E402

CNN_IN, CNN_OUT = [3, 224, 224], [16, 112, 112]
RES_IN = [64, 56, 56]
DEFAULT_MAX_BATCH_SIZE = 6  # given to the server as --backend-config=metal_mps,default-max-batch-size=6


def unsupported_op_model() -> bytes:
    """A well-formed ONNX model whose operator (of a custom domain) metal_mps does not implement."""
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["input"], ["output"], domain="com.example.custom")],
        "frobnicate",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch"])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example.custom", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def write_repository(repo: Path, onnx_models: dict[str, Path]) -> None:
    cnn, res = onnx_models["simple_cnn"], onnx_models["resnet_block"]
    cfg = te.config_pbtxt
    models: dict[str, tuple[Path | bytes, str | None, dict]] = {
        # The spec's example configuration, with KIND_MODEL.
        "simple_cnn": (cnn, cfg("simple_cnn", CNN_IN, CNN_OUT), {}),
        "resnet_block": (res, cfg("resnet_block", RES_IN, RES_IN), {}),
        # Auto-complete: a config naming only the backend, and no config at all.
        "partial_cnn": (cnn, 'backend: "metal_mps"\n', {}),
        "auto_cnn": (cnn, None, {}),
        # Dynamic batching with a queue delay, verbose logging on.
        "batched_cnn": (
            cnn,
            cfg("batched_cnn", CNN_IN, CNN_OUT, dynamic_batching="max_queue_delay_microseconds: 200000",
                parameters={"verbose": "true"}),
            {},
        ),
        "two_instances": (
            cnn,
            cfg("two_instances", CNN_IN, CNN_OUT, instance_groups=(("KIND_MODEL", 1), ("KIND_CPU", 1)),
                dynamic_batching=None, parameters={"verbose": "true"}),
            {},
        ),
        "unbatched_cnn": (cnn, cfg("unbatched_cnn", [-1, *CNN_IN], [-1, *CNN_OUT], max_batch_size=0, dynamic_batching=None), {}),
        "versioned_cnn": (
            cnn,
            cfg("versioned_cnn", CNN_IN, CNN_OUT, extra='version_policy: { all { } }\ndefault_model_filename: "net.onnx"\n'),
            {"versions": (1, 2), "filename": "net.onnx"},
        ),
        "fp16_cnn": (cnn, cfg("fp16_cnn", CNN_IN, CNN_OUT, parameters={"precision": "fp16", "max_pool_size": "64MiB",
                                                                      "max_buffer_age": "5s"}), {}),
        "lifecycle_cnn": (cnn, cfg("lifecycle_cnn", CNN_IN, CNN_OUT), {}),
        # Models that must fail to load, each with our message.
        "corrupt": (b"this is not an ONNX model", 'backend: "metal_mps"\n', {}),
        "unsupported_op": (unsupported_op_model(), 'backend: "metal_mps"\n', {}),
        "bad_dims": (cnn, cfg("bad_dims", [3, 224, 225], CNN_OUT), {}),
        "bad_param": (cnn, cfg("bad_param", CNN_IN, CNN_OUT, parameters={"precision": "int4"}), {}),
        "kind_gpu": (cnn, cfg("kind_gpu", CNN_IN, CNN_OUT, instance_groups=(("KIND_GPU", 1),)), {}),
        "panic_init": (cnn, cfg("panic_init", CNN_IN, CNN_OUT, parameters={"fault_injection": "panic_in_model_initialize"}), {}),
        "panic_execute": (cnn, cfg("panic_execute", CNN_IN, CNN_OUT, parameters={"fault_injection": "panic_in_execute"}), {}),
    }
    for name, (model, config, kw) in models.items():
        te.add_model(repo, name, model, config, **kw)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    return te.generate_models(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def backend_dir(tmp_path_factory) -> Path:
    backend_dir = tmp_path_factory.mktemp("backends")
    te.install_backend(te.build_backend(), backend_dir)
    return backend_dir


@pytest.fixture(scope="session")
def server(tmp_path_factory, onnx_models, backend_dir):
    """A tritonserver in explicit model-control mode over the test repository."""
    repo = tmp_path_factory.mktemp("repo")
    write_repository(repo, onnx_models)
    # Two malloc arenas: glibc's per-thread arenas otherwise let RSS step up by tens of MiB
    # at random points (it plateaus), which would blur the load/unload leak check.
    env = dict(os.environ, METAL_MPS_FAULT_INJECTION="1", MALLOC_ARENA_MAX="2")
    srv = te.TritonServer(
        repo,
        backend_dir,
        args=("--model-control-mode=explicit", "--exit-timeout-secs=10", f"--backend-config=metal_mps,default-max-batch-size={DEFAULT_MAX_BATCH_SIZE}"),
        env=env,
        log_path=tmp_path_factory.mktemp("logs") / "tritonserver.log",
    )
    srv.start()
    yield srv
    code = srv.stop()
    print(f"tritonserver exited with {code}; log: {srv.log_path}")


@pytest.fixture(scope="session")
def http(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url, concurrency=16, network_timeout=120)
    yield client
    client.close()  # open keep-alive connections would hold the server's shutdown


@pytest.fixture(scope="session")
def grpc(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def load(http):
    """`load(name, config=None)`: loads a model once per session (config: a JSON-able override)."""
    loaded: set[str] = set()

    def _load(name: str, config: dict | None = None) -> None:
        if name not in loaded:
            http.load_model(name, config=json.dumps(config) if config is not None else None)
            loaded.add(name)

    return _load


@pytest.fixture(scope="session")
def reference(onnx_models):
    """`reference(model_name, x)`: onnxruntime's output for `x`."""
    import onnxruntime as ort

    sessions = {}

    def _run(name: str, x: np.ndarray) -> np.ndarray:
        if name not in sessions:
            sessions[name] = ort.InferenceSession(str(onnx_models[name]), providers=["CPUExecutionProvider"])
        return sessions[name].run(None, {"input": x})[0]

    return _run


def image(batch: int = 1, shape=CNN_IN, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def infer_http(client, model: str, x: np.ndarray, outputs: list[str] | None = None, version: str = "", dtype: str = "FP32"):
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input", list(x.shape), dtype)
    inp.set_data_from_numpy(x, binary_data=True)
    outs = [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs] if outputs else None
    return client.infer(model, [inp], outputs=outs, model_version=version)


def infer_grpc(client, model: str, x: np.ndarray):
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp])


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-4) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def model_stats(server, name: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{name}/stats") as r:
        return json.loads(r.read())["model_stats"][0]
