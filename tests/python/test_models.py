"""End-to-end tests of the `metal-mps` CLI against onnxruntime, plus its handling of bad input.

The test models come from models/create_test_model.py (built once per session into a tmp dir).
`metal-mps run` must match onnxruntime within rtol 1e-3 / atol 1e-4 on CPU and, where a Vulkan
adapter exists, on GPU. Broken models and inputs must give a non-zero exit, a message naming
the problem, and no panic. The binary is $METAL_MPS_BIN (default target/release/metal-mps).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("METAL_MPS_BIN", ROOT / "target" / "release" / "metal-mps"))
RTOL, ATOL = 1e-3, 1e-4
TIMEOUT_S = 600

# One XDG_RUNTIME_DIR (mode 0700) for every child: keeps Mesa quiet on lavapipe.
ENV = dict(os.environ)
if not ENV.get("XDG_RUNTIME_DIR"):
    ENV["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")
    atexit.register(shutil.rmtree, ENV["XDG_RUNTIME_DIR"], True)


def metal_mps(*args, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    if not BIN.is_file():
        pytest.fail(f"{BIN} not found: run `cargo build --release` or set METAL_MPS_BIN")
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          errors="replace", timeout=timeout, env=ENV)


def load_model_builder():
    spec = importlib.util.spec_from_file_location("create_test_model", ROOT / "models" / "create_test_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """simple_cnn, resnet_block, resnet50 and tiny as <dir>/<name>.onnx."""
    out = tmp_path_factory.mktemp("models")
    builder = load_model_builder()
    for name, make in builder.MODELS.items():
        onnx.save(make(), str(out / f"{name}.onnx"))
    return out


@pytest.fixture(scope="session")
def gpu_available(models, tmp_path_factory) -> None:
    """Skips the calling test when `metal-mps run --device gpu` finds no adapter."""
    d = tmp_path_factory.mktemp("gpu-probe")
    np.save(d / "x.npy", np.ones((1, 4), np.float32))
    p = metal_mps("run", models / "tiny.onnx", "--input", f"input={d / 'x.npy'}",
                  "--output-dir", d, "--device", "gpu")
    if p.returncode != 0:
        msg = (p.stderr + p.stdout).strip()
        if re.search(r"(?i)adapter", msg):
            pytest.skip(f"no GPU adapter: {msg.splitlines()[-1] if msg else ''}")


def random_input(shape, seed: int) -> np.ndarray:
    """Seeded standard-normal input with no exact zeros."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x[x == 0] = 0.5
    return x


def run_cli(model: Path, inputs: dict[str, Path], out_dir: Path, device: str = "cpu") -> subprocess.CompletedProcess:
    args = ["run", model, "--output-dir", out_dir, "--device", device]
    for name, path in inputs.items():
        args += ["--input", f"{name}={path}"]
    return metal_mps(*args)


CASES = [("simple_cnn", 1), ("simple_cnn", 4), ("resnet_block", 1), ("resnet_block", 4), ("resnet50", 1),
         ("transformer_layer", 1), ("transformer_layer", 3), ("mlp", 1), ("mlp", 7),
         ("mobilenet_block", 1), ("mobilenet_block", 2)]
SHAPES = {"simple_cnn": (3, 224, 224), "resnet_block": (64, 56, 56), "resnet50": (3, 224, 224),
          "transformer_layer": (128, 768), "mlp": (1024,), "mobilenet_block": (32, 56, 56)}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("name,batch", CASES, ids=[f"{n}-b{b}" for n, b in CASES])
def test_matches_onnxruntime(models, tmp_path, request, name, batch, device):
    if device == "gpu":
        request.getfixturevalue("gpu_available")
    model = models / f"{name}.onnx"
    x = random_input((batch, *SHAPES[name]), seed=batch)
    np.save(tmp_path / "input.npy", x)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    (expected,) = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})

    p = run_cli(model, {"input": tmp_path / "input.npy"}, tmp_path, device)
    assert p.returncode == 0, f"metal-mps run failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    assert "panicked" not in p.stderr
    got = np.load(tmp_path / "output.npy")
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name,batch", [("resnet_block", 2), ("transformer_layer", 2), ("mobilenet_block", 1)])
def test_own_thread_pool_matches_onnxruntime(models, tmp_path, name, batch, threads):
    """`--threads N` runs the model on a pool of its own (the server's `intra_op_threads`)."""
    model = models / f"{name}.onnx"
    x = random_input((batch, *SHAPES[name]), seed=threads)
    np.save(tmp_path / "input.npy", x)
    (expected,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    p = metal_mps("run", model, "--output-dir", tmp_path, "--input", f"input={tmp_path / 'input.npy'}",
                  "--threads", threads)
    assert p.returncode == 0, f"metal-mps run --threads {threads} failed:\n{p.stderr}{p.stdout}"
    np.testing.assert_allclose(np.load(tmp_path / "output.npy"), expected, rtol=RTOL, atol=ATOL)


def test_bench_json_reports_load_and_run_times(models):
    p = metal_mps("bench", models / "simple_cnn.onnx", "--json", "--iterations", 4, "--warmup", 1)
    assert p.returncode == 0, f"metal-mps bench failed:\n{p.stderr}{p.stdout}"
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["device"] == "cpu" and report["iterations"] == 4
    assert report["load_ms"] > 0 and report["first_run_ms"] > 0
    assert 0 < report["min_ms"] <= report["median_ms"] <= report["p90_ms"]


def big_output_model(path: Path) -> Path:
    """A 3×3 depthwise Conv whose 5 MB output is a graph output, as a feature map is."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.uniform(-1, 1, (192, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=192, pads=[1, 1, 1, 1])], "big_output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 192, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 192, 56, 56])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_runs_reuse_the_memory_of_a_large_output(tmp_path):
    """glibc would unmap each run's 5 MB output when it is freed, and the next run would fault
    its ~1200 pages in again (3-4x the convolution's time): the CLI keeps freed memory, unless
    the user sets glibc's own tunables (here the default top pad, which brings the faults back)."""
    model = big_output_model(tmp_path / "big_output.onnx")

    def faults(env: dict) -> float:
        p = subprocess.run([str(BIN), "bench", str(model), "--json", "--iterations", "30", "--warmup", "10"],
                           capture_output=True, text=True, timeout=TIMEOUT_S,
                           env={**ENV, "RAYON_NUM_THREADS": "1", **env})
        assert p.returncode == 0, f"metal-mps bench failed:\n{p.stderr}{p.stdout}"
        return json.loads(p.stdout.strip().splitlines()[-1])["page_faults_per_run"]

    pages = 2 * 192 * 56 * 56 * 4 // 4096
    assert faults({}) < pages / 10
    assert faults({"MALLOC_TOP_PAD_": "131072"}) > pages / 2


def test_autotune_flag_takes_on_or_off(models):
    p = metal_mps("bench", models / "simple_cnn.onnx", "--json", "--iterations", 2, "--autotune", "off")
    assert p.returncode == 0, f"metal-mps bench --autotune off failed:\n{p.stderr}{p.stdout}"
    p = metal_mps("bench", models / "simple_cnn.onnx", "--autotune", "maybe")
    assert p.returncode != 0 and "'maybe': use on or off" in p.stderr, p.stderr


def test_zero_threads_is_refused(models, tmp_path):
    p = metal_mps("run", models / "tiny.onnx", "--input", "input=x.npy", "--threads", 0)
    assert p.returncode != 0 and "threads" in p.stderr and "panicked" not in p.stderr


# Depthwise convolutions (group = channels) with each fused form the CPU plan builds: bias, Relu or
# Clip, a residual Add (+ Relu); 1-D and 2-D, uneven pads, auto_pad, dilation, a channel multiplier.
# (input shape, kernel, attributes, multiplier, what follows the Conv)
DEPTHWISE = [
    ((2, 8, 20, 23), [3, 3], {"pads": [1, 1, 1, 1]}, 1, "add_relu"),
    ((1, 6, 17, 9), [5, 3], {"pads": [2, 0, 1, 2], "strides": [2, 1]}, 1, "clip"),
    ((1, 4, 15, 15), [3, 3], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 2, "relu"),
    ((1, 4, 16, 13), [3, 3], {"pads": [2, 1, 2, 3], "strides": [2, 2], "dilations": [2, 2]}, 2, "clip"),
    ((2, 5, 7, 7), [7, 7], {"auto_pad": "SAME_LOWER"}, 1, "add"),
    ((1, 3, 9, 40), [1, 4], {"pads": [0, 3, 0, 0], "strides": [1, 3]}, 3, "none"),
    ((2, 6, 50), [5], {"pads": [2, 1], "dilations": [2]}, 1, "clip"),
]


@pytest.mark.parametrize("shape,kernel,attrs,mult,after", DEPTHWISE, ids=[f"dw{i}" for i in range(len(DEPTHWISE))])
def test_depthwise_conv_matches_onnxruntime(tmp_path, shape, kernel, attrs, mult, after):
    rng = np.random.default_rng(7)
    c = shape[1]
    w = rng.standard_normal((c * mult, 1, *kernel)).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.5, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["y"], group=c, kernel_shape=kernel, **attrs)]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    probe = save_model(tmp_path / "probe.onnx", nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    x = random_input(shape, seed=3)
    (y,) = ort.InferenceSession(str(probe), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)]
    feeds = {"input": x}
    if after.startswith("add"):
        inputs.append(helper.make_tensor_value_info("skip", TensorProto.FLOAT, y.shape))
        feeds["skip"] = random_input(y.shape, seed=4)
        nodes.append(helper.make_node("Add", ["y", "skip"], ["s"] if after == "add_relu" else ["output"]))
        if after == "add_relu":
            nodes.append(helper.make_node("Relu", ["s"], ["output"]))
    elif after == "relu":
        nodes.append(helper.make_node("Relu", ["y"], ["output"]))
    elif after == "clip":
        nodes.append(helper.make_node("Clip", ["y", "lo", "hi"], ["output"]))
    else:
        nodes.append(helper.make_node("Identity", ["y"], ["output"]))
    model = save_model(tmp_path / "dw.onnx", nodes, inputs,
                       [helper.make_tensor_value_info("output", TensorProto.FLOAT, y.shape)], inits)
    (expected,) = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    paths = {}
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
        paths[name] = tmp_path / f"{name}.npy"
    p = run_cli(model, paths, tmp_path)
    assert p.returncode == 0, f"metal-mps run failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    got = np.load(tmp_path / "output.npy")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


# ---- bad input -------------------------------------------------------------------------------

def assert_clean_error(p: subprocess.CompletedProcess, pattern: str) -> None:
    """Non-zero exit (not a signal), no panic, and a message matching `pattern`."""
    out = p.stderr + p.stdout
    assert p.returncode > 0, f"expected an error exit, got {p.returncode}:\n{out}"
    assert "panicked" not in p.stderr, p.stderr
    assert re.search(pattern, out), f"message does not match {pattern!r}:\n{out}"


def save_model(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path.write_bytes(m.SerializeToString())
    return path


def vec4(name: str):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4])


@pytest.fixture
def x4(tmp_path) -> Path:
    np.save(tmp_path / "x4.npy", random_input((1, 4), 0))
    return tmp_path / "x4.npy"


def test_truncated_model(models, tmp_path, x4):
    data = (models / "resnet_block.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    p = run_cli(bad, {"input": x4}, tmp_path)
    assert_clean_error(p, r"(?i)decod|pars|truncat|invalid|malformed|protobuf|underflow|unexpected end|eof")


def test_unknown_op(tmp_path, x4):
    node = helper.make_node("FrobnicateXyz", ["input"], ["output"], name="mystery_node")
    model = save_model(tmp_path / "unknown_op.onnx", [node], [vec4("input")], [vec4("output")])
    p = run_cli(model, {"input": x4}, tmp_path)
    assert_clean_error(p, r"FrobnicateXyz")
    assert_clean_error(p, r"mystery_node")


def test_wrong_input_dtype(models, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((1, 3, 224, 224), np.int32))
    p = run_cli(models / "simple_cnn.onnx", {"input": tmp_path / "x.npy"}, tmp_path)
    assert_clean_error(p, r"(?i)type|int32|i32|float|f32")


def test_wrong_rank(models, tmp_path):
    np.save(tmp_path / "x.npy", random_input((3, 224, 224), 0))
    p = run_cli(models / "simple_cnn.onnx", {"input": tmp_path / "x.npy"}, tmp_path)
    assert_clean_error(p, r"(?i)rank|shape|dim")


def test_missing_input(tmp_path, x4):
    node = helper.make_node("Add", ["input", "second_input"], ["output"], name="add")
    model = save_model(tmp_path / "two_inputs.onnx", [node],
                       [vec4("input"), vec4("second_input")], [vec4("output")])
    p = run_cli(model, {"input": x4}, tmp_path)
    assert_clean_error(p, r"second_input")


def test_huge_initializer(tmp_path, x4):
    # 2^82 floats declared, no data: must be refused, not allocated (nor wrapped around).
    huge = TensorProto(name="huge_weight", data_type=TensorProto.FLOAT, dims=[1 << 40, 1 << 40, 4])
    node = helper.make_node("Add", ["input", "huge_weight"], ["output"], name="add_huge")
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1 << 40, 1 << 40, 4])
    model = save_model(tmp_path / "huge.onnx", [node], [vec4("input")], [out], [huge])
    p = run_cli(model, {"input": x4}, tmp_path)
    assert_clean_error(p, r"(?i)huge_weight|too large|overflow|exceed|size|bytes")
