"""Helpers shared by the Triton scripts and tests: where Triton is, building and
installing the metal_mps backend, writing model repositories, running a server.

Triton comes from the PyPI wheel nvidia-pytriton==0.7.0 (server 2.51.0, backend
API 1.19), installed into the virtualenv running this module; see
tests/triton/requirements.txt. perf_analyzer comes from the tritonclient==2.51.0
wheel, unpacked beside it on demand (its protobuf pin clashes with onnx's).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND_NAME = "metal_mps"
BACKEND_LIB = "libtriton_metal_mps.so"
PERF_ANALYZER_WHEEL = "tritonclient==2.51.0"


def pytriton_dir() -> Path:
    """The installed `pytriton` package (holds `tritonserver/`)."""
    import pytriton  # noqa: PLC0415 (imported late: only where Triton is used)

    return Path(pytriton.__file__).resolve().parent


def tritonserver_bin() -> Path:
    return pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def triton_libs() -> Path:
    """The wheel's bundled shared libraries (libtritonserver, libb64, libcudart, ...)."""
    return pytriton_dir().parent / "nvidia_pytriton.libs"


def build_backend() -> Path:
    """Builds the backend (`cargo build --release -p triton-metal-mps`) and returns the library.

    `METAL_MPS_TRITON_BACKEND=/path/to/libtriton_metal_mps.so` skips the build.
    """
    given = os.environ.get("METAL_MPS_TRITON_BACKEND")
    if given:
        return Path(given)
    subprocess.run(["cargo", "build", "--release", "-p", "triton-metal-mps"], cwd=REPO_ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    return target / "release" / BACKEND_LIB


def install_backend(lib: Path, backend_dir: Path) -> Path:
    """Installs the backend as `<backend_dir>/metal_mps/libtriton_metal_mps.so`.

    Copies to a temporary name and renames: overwriting a library a running
    server has loaded crashes that server.
    """
    dest_dir = backend_dir / BACKEND_NAME
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{BACKEND_LIB}.tmp"
    shutil.copy2(lib, tmp)
    tmp.replace(dest_dir / BACKEND_LIB)
    return dest_dir / BACKEND_LIB


def install_python_backend(backend_dir: Path) -> None:
    """Installs Triton's Python backend (for the onnxruntime comparator) into `<backend_dir>/python`."""
    src = pytriton_dir() / "tritonserver"
    dest = backend_dir / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(src / "backends" / "python" / f, dest / f)
    stub = src / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    shutil.copy2(stub, dest / "triton_python_backend_stub")


def python_backend_env() -> dict[str, str]:
    """Environment the Python backend's stub needs: this venv's python first on PATH,
    the interpreter's own lib directory and the wheel's libraries on LD_LIBRARY_PATH."""
    import sysconfig  # noqa: PLC0415

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(triton_libs()), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    return env


def generate_models(outdir: Path, names: tuple[str, ...] = ("simple_cnn", "resnet_block")) -> dict[str, Path]:
    """Runs models/create_test_model.py; returns {name: path of name.onnx}."""
    outdir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (outdir / f"{n}.onnx").exists()]
    if missing:
        subprocess.run(
            [sys.executable, str(REPO_ROOT / "models" / "create_test_model.py"), str(outdir), "--only", *missing],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return {n: outdir / f"{n}.onnx" for n in names}


def config_pbtxt(
    name: str,
    input_dims: list[int],
    output_dims: list[int],
    *,
    max_batch_size: int = 8,
    instance_groups: tuple[tuple[str, int], ...] = (("KIND_MODEL", 1),),
    dynamic_batching: str | None = "",
    parameters: dict[str, str] | None = None,
    backend: str = BACKEND_NAME,
    input_name: str = "input",
    output_name: str = "output",
    extra: str = "",
) -> str:
    """A config.pbtxt in the spec's layout (one FP32 input and output).

    `dynamic_batching` is the body of `dynamic_batching { ... }`, or None for none.
    """
    groups = ", ".join(f"{{ kind: {k} count: {c} }}" for k, c in instance_groups)
    text = f"""name: "{name}"
backend: "{backend}"
max_batch_size: {max_batch_size}
input [{{
  name: "{input_name}"
  data_type: TYPE_FP32
  dims: [ {", ".join(map(str, input_dims))} ]
}}]
output [{{
  name: "{output_name}"
  data_type: TYPE_FP32
  dims: [ {", ".join(map(str, output_dims))} ]
}}]
instance_group [ {groups} ]
"""
    if dynamic_batching is not None:
        text += f"dynamic_batching {{ {dynamic_batching} }}\n"
    for key, value in (parameters or {}).items():
        text += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    return text + extra


def add_model(
    repo: Path,
    name: str,
    model: Path | bytes,
    config: str | None,
    *,
    versions: tuple[int, ...] = (1,),
    filename: str = "model.onnx",
) -> Path:
    """Writes `<repo>/<name>/config.pbtxt` (unless None) and `<repo>/<name>/<v>/<filename>`."""
    model_dir = repo / name
    for v in versions:
        (model_dir / str(v)).mkdir(parents=True, exist_ok=True)
        dest = model_dir / str(v) / filename
        if isinstance(model, bytes):
            dest.write_bytes(model)
        else:
            shutil.copy2(model, dest)
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on loopback right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_health(server, what: str, state: str, timeout: float) -> None:
    """Polls `server`'s `/v2/health/<state>` until it answers 200; stops the server and raises
    with the end of its log when its process exits or `timeout` seconds pass first.
    `server` has `proc`, `http_url`, `stop()` and `log_text()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.proc.returncode}:\n{server.log_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://{server.http_url}/v2/health/{state}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"{what} did not become {state} in {timeout} s:\n{server.log_text()[-4000:]}")


class TritonServer:
    """A tritonserver process on loopback; `start()` waits until it is live."""

    def __init__(
        self,
        repo: Path,
        backend_dir: Path,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        ports: tuple[int, int, int] | None = None,
        address: str = "127.0.0.1",
    ):
        self.repo, self.backend_dir, self.args, self.address = repo, backend_dir, args, address
        self.env = dict(env if env is not None else os.environ)
        self.http_port, self.grpc_port, self.metrics_port = ports or tuple(free_ports(3))
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(tritonserver_bin()),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            *self.args,
        ]

    def start(self, timeout: float = 60.0, ready: bool = False) -> "TritonServer":
        """Starts the server; waits until live (or ready: every model loaded)."""
        log = open(self.log_path, "wb")  # noqa: SIM115 (kept open for the process's lifetime)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        wait_for_health(self, "tritonserver", "ready" if ready else "live", timeout)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident set size of the server process."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def perf_analyzer(cache_dir: Path | None = None) -> tuple[Path, dict[str, str]]:
    """perf_analyzer from the tritonclient==2.51.0 wheel, and the environment it runs in.

    The wheel is unpacked (no dependencies) into `build/perf-analyzer` on first use.
    The binary needs libb64.so.0d and libcudart.so.12, which the Triton wheel ships
    under hashed names: they are linked under their sonames into a lib directory.
    """
    root = cache_dir or REPO_ROOT / "build" / "perf-analyzer"
    binary = root / "bin" / "perf_analyzer"
    if not binary.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root), PERF_ANALYZER_WHEEL],
            check=True,
        )
    libdir = root / "sonames"
    libdir.mkdir(exist_ok=True)
    for soname, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        link = libdir / soname
        target = next(triton_libs().glob(pattern))
        # A link left behind by a removed virtualenv dangles (exists() is False but the
        # name is taken): replace any link that does not lead to this venv's library.
        if os.path.lexists(link):
            if link.is_symlink() and link.exists() and link.resolve() == target.resolve():
                continue
            link.unlink()
        link.symlink_to(target)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libdir), env.get("LD_LIBRARY_PATH", "")) if p)
    return binary, env
