"""Fixtures for the `metal-mps serve` client tests.

The tests talk to a server only through `endpoints` (HTTP and gRPC URLs), so
the same tests can run against another server speaking Triton's protocols
(e.g. tritonserver with the metal_mps backend) by overriding that fixture.
Tests that check things only metal-mps serve has (its metrics port, poll
mode, shutdown) use the `server` fixture or start their own.

The server binary is $METAL_MPS_BIN (default target/release/metal-mps),
run as `metal-mps serve ...` on loopback with ports chosen by the OS.
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

# name -> (source model, versions, config.pbtxt or None for auto-complete)
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
    "tiny_auto": ("tiny", [1], None),
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
    # Requests wait up to 0.4 s in its queue for company: in flight for sure.
    "cnn_slow": ("simple_cnn", [1], """
backend: "metal_mps"
max_batch_size: 4
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 400000 }
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
    "broken": ("tiny", [1], f"""
backend: "metal_mps"
max_batch_size: 8
{TINY_IO}
sequence_batching {{ }}
"""),
}


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
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
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


@pytest.fixture(scope="session")
def endpoints(server):
    """(http_url, grpc_url) of the server under test: override to test another server."""
    return server.http_url, server.grpc_url


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
