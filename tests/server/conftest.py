"""Fixtures for the client tests of `metal-mps serve` and of tritonserver with our backend.

The protocol tests talk to a server only through `endpoints` (HTTP and gRPC URLs),
a session fixture parametrized over SERVERS: every such test runs unchanged
against `metal-mps serve` and against the real tritonserver (PyPI wheel
nvidia-pytriton==0.7.0) loading libtriton_metal_mps.so, both in explicit
model-control mode over the same repository (REPOSITORY) with the same models
loaded at start. Tests that check things only metal-mps serve has (its metrics
port, poll mode, shutdown, its exact error texts) use the `server` fixture, the
`serve_endpoints` fixture, or start their own.

The server binary is $METAL_MPS_BIN (default target/release/metal-mps), run as
`metal-mps serve ...` on loopback with ports chosen by the OS. The backend is
$METAL_MPS_TRITON_BACKEND (default target/release/libtriton_metal_mps.so).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("METAL_MPS_BIN", ROOT / "target" / "release" / "metal-mps"))
BACKEND_LIB = Path(os.environ.get("METAL_MPS_TRITON_BACKEND", ROOT / "target" / "release" / "libtriton_metal_mps.so"))
MODELS = ROOT / "build" / "models"

# Largest request the test server accepts; test_errors sends a bigger one.
MAX_INPUT_SIZE = 8 * 1024 * 1024

# Models the session server loads at start (explicit mode); the others are
# loaded by the tests that need them.
STARTUP_MODELS = [
    "tiny", "tiny_batched", "tiny_auto", "simple_cnn", "tiny_queue1",
    "tiny_latest", "tiny_specific", "tiny_unload", "cnn_slow",
]

TINY_IO = """
input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

# Servers every `endpoints` test runs against.
SERVERS = ["metal-mps-serve", "tritonserver"]

# name -> (source model, versions, config.pbtxt); every config names the backend
# (tritonserver would otherwise pick onnxruntime for a model.onnx).
REPOSITORY = {
    "tiny": ("tiny", [1, 2], f"""
name: "tiny"
backend: "metal_mps"
max_batch_size: 8
version_policy: {{ all {{ }} }}
{TINY_IO}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ }}
"""),
    "tiny_batched": ("tiny", [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: 100000 }}
"""),
    # Only the backend: the rest is auto-completed from the ONNX model.
    "tiny_auto": ("tiny", [1], 'backend: "metal_mps"\n'),
    "simple_cnn": ("simple_cnn", [1], """
name: "simple_cnn"
backend: "metal_mps"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224, 224 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 16, 112, 112 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""),
    # A queue of one, whose request waits 0.3 s for company: the next ones find it full.
    "tiny_queue1": ("tiny", [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: 300000 default_queue_policy {{ max_queue_size: 1 }} }}
"""),
    # Requests wait up to 0.4 s in its queue for company: in flight for sure. tritonserver
    # honours a request's own timeout only under a default timeout with allow_timeout_override.
    "cnn_slow": ("simple_cnn", [1], """
backend: "metal_mps"
max_batch_size: 4
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 400000 default_queue_policy { default_timeout_microseconds: 10000000 allow_timeout_override: true } }
"""),
    "tiny_latest": ("tiny", [1, 2, 3], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
instance_group [ {{ kind: KIND_CPU }} ]
"""),
    "tiny_specific": ("tiny", [1, 2, 3], f"""
backend: "metal_mps"
max_batch_size: 8
version_policy: {{ specific {{ versions: [ 1, 3 ] }} }}
{TINY_IO}
instance_group [ {{ kind: KIND_CPU }} ]
"""),
    "tiny_unload": ("tiny", [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
instance_group [ {{ kind: KIND_CPU }} ]
"""),
    "tiny_later": ("tiny", [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
instance_group [ {{ kind: KIND_CPU }} ]
"""),
    # BYTES in and out (StringConcat) beside INT64 (LabelEncoder), batched: test_strings.
    "strings": ("strings", [1], """
backend: "metal_mps"
max_batch_size: 8
input [ { name: "words" data_type: TYPE_STRING dims: [ 3 ] } ]
output [
  { name: "shout" data_type: TYPE_STRING dims: [ 3 ] },
  { name: "ids" data_type: TYPE_INT64 dims: [ 3 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 50000 }
"""),
    # Not an ONNX model: fails to load in either server.
    "corrupt": (None, [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
"""),
    # sequence_batching: tritonserver implements it, metal-mps serve refuses it.
    "broken": ("tiny", [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
sequence_batching {{ }}
"""),
}


# The strings model's LabelEncoder: word -> id, -1 for any other word.
STRING_IDS = {"cat": 1, "dog": 2, "yak": 3}


def strings_model() -> bytes:
    """words STRING [batch, 3] -> shout = words + "!" (STRING), ids = STRING_IDS[words] (INT64)."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    bang = numpy_helper.from_array(np.array(["!"], dtype=object), "bang")
    nodes = [
        helper.make_node("StringConcat", ["words", "bang"], ["shout"]),
        helper.make_node("LabelEncoder", ["words"], ["ids"], domain="ai.onnx.ml",
                         keys_strings=list(STRING_IDS), values_int64s=list(STRING_IDS.values()),
                         default_int64=-1),
    ]
    graph = helper.make_graph(
        nodes, "strings", [helper.make_tensor_value_info("words", TensorProto.STRING, ["batch", 3])],
        [helper.make_tensor_value_info("shout", TensorProto.STRING, ["batch", 3]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        initializer=[bang])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20),
                                                    helper.make_opsetid("ai.onnx.ml", 2)])
    return model.SerializeToString()


def ensure_models() -> Path:
    """build/models/{tiny,simple_cnn}.onnx, generated when missing."""
    need = ["tiny", "simple_cnn"]
    if any(not (MODELS / f"{n}.onnx").is_file() for n in need):
        subprocess.run([sys.executable, str(ROOT / "models" / "create_test_model.py"), str(MODELS),
                        "--only", *need], check=True, stdout=subprocess.DEVNULL)
    return MODELS


def make_repository(root: Path, names: list[str] | None = None) -> Path:
    """A Triton model repository under `root` with the models of REPOSITORY."""
    models = ensure_models()
    root.mkdir(parents=True, exist_ok=True)
    for name in names or list(REPOSITORY):
        source, versions, config = REPOSITORY[name]
        for v in versions:
            d = root / name / str(v)
            d.mkdir(parents=True, exist_ok=True)
            if source is None:
                (d / "model.onnx").write_bytes(b"this is not an ONNX model")
            elif source == "strings":
                (d / "model.onnx").write_bytes(strings_model())
            else:
                shutil.copy(models / f"{source}.onnx", d / "model.onnx")
        if config is not None:
            (root / name / "config.pbtxt").write_text(config)
    return root


@dataclass
class Server:
    """A `metal-mps serve` process on loopback."""

    repo: Path
    args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    env: dict = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> "Server":
        if not BIN.is_file():
            pytest.fail(f"server binary {BIN} is missing: build it (cargo build --release) or set METAL_MPS_BIN")
        self.log_path = self.log_path or self.repo.parent / f"{self.repo.name}-server.log"
        log = open(self.log_path, "w")
        cmd = [str(BIN), "serve", "--model-repository", str(self.repo),
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1", **self.env})
        deadline = time.time() + timeout
        ports = {}
        while time.time() < deadline and len(ports) < 3:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
            for kind, port in re.findall(r"Started (GRPCInferenceService|HTTPService|Metrics Service) at [\d.]+:(\d+)", self.log()):
                ports[kind] = int(port)
            time.sleep(0.05)
        if len(ports) < 3:
            pytest.fail(f"server did not start its endpoints:\n{self.log()}")
        self.http_port, self.grpc_port = ports["HTTPService"], ports["GRPCInferenceService"]
        self.metrics_port = ports["Metrics Service"]
        while wait_ready and time.time() < deadline:
            if http_status(f"http://{self.http_url}/v2/health/ready") == 200:
                return self
            time.sleep(0.05)
        if wait_ready:
            pytest.fail(f"server not ready after {timeout} s:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not stop within {timeout} s after SIGTERM:\n{self.log()}")


def http_status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    """The HTTP status of a request (connection errors give 0)."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The session's server: explicit control mode, STARTUP_MODELS loaded."""
    repo = make_repository(tmp_path_factory.mktemp("server") / "repo")
    args = ["--model-control-mode", "explicit", "--http-max-input-size", str(MAX_INPUT_SIZE)]
    for m in STARTUP_MODELS:
        args += ["--load-model", m]
    s = Server(repo, args).start()
    yield s
    code = s.stop()
    assert code == 0, f"server exited with {code} after SIGTERM:\n{s.log()}"


class Endpoints(tuple):
    """(http_url, grpc_url), with `.kind`: which of SERVERS answers there."""

    kind: str

    def __new__(cls, http_url: str, grpc_url: str, kind: str) -> "Endpoints":
        self = super().__new__(cls, (http_url, grpc_url))
        self.kind = kind
        return self


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory):
    """tritonserver (from the nvidia-pytriton wheel) with the metal_mps backend, set up as `server`."""
    sys.path.insert(0, str(ROOT / "scripts" / "triton"))
    import triton_env as te  # noqa: PLC0415

    if not BACKEND_LIB.is_file():
        pytest.fail(f"backend {BACKEND_LIB} is missing: build it (cargo build --release -p triton-metal-mps) "
                    "or set METAL_MPS_TRITON_BACKEND")
    base = tmp_path_factory.mktemp("tritonserver")
    repo = make_repository(base / "repo")
    te.install_backend(BACKEND_LIB, base / "backends")
    # tritonserver 2.51 has no --http-max-input-size (its limit is fixed at 64 MiB).
    args = ["--model-control-mode=explicit", "--exit-timeout-secs=10"]
    args += [f"--load-model={m}" for m in STARTUP_MODELS]
    srv = te.TritonServer(repo, base / "backends", args=tuple(args), env=dict(os.environ, MALLOC_ARENA_MAX="2"),
                          log_path=base / "tritonserver.log")
    try:
        srv.start(ready=True)
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()


@pytest.fixture(scope="session", params=SERVERS)
def endpoints(request):
    """(http_url, grpc_url) of the server under test, once per entry of SERVERS."""
    if request.param == "tritonserver":
        s = request.getfixturevalue("triton_server")
    else:
        s = request.getfixturevalue("server")
    return Endpoints(s.http_url, s.grpc_url, request.param)


@pytest.fixture(scope="session")
def serve_endpoints(server):
    """(http_url, grpc_url) of metal-mps serve alone, for tests of what only it does."""
    return Endpoints(server.http_url, server.grpc_url, "metal-mps-serve")


@pytest.fixture(scope="session")
def reference():
    """onnxruntime sessions of the test models, for expected outputs."""
    import onnxruntime as ort

    models = ensure_models()
    sessions = {}

    def run(model: str, x: np.ndarray) -> np.ndarray:
        if model not in sessions:
            sessions[model] = ort.InferenceSession(str(models / f"{model}.onnx"), providers=["CPUExecutionProvider"])
        return sessions[model].run(None, {"input": x})[0]

    return run
