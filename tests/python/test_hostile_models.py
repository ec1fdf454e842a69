"""Hostile models: declared sizes that must not be materialized, and files outside the model's folder.

Each model here once took the process down (an abort on a 51 GB allocation, a "capacity
overflow" panic) or read a file outside the model's folder (issue #12). Every one must now end
in a clean error exit naming the problem, and a refused path must be refused with the same
message whether or not its target exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_models import assert_clean_error, metal_mps, run_cli, save_model

SIZE_ERROR = r"(?i)too large|exceeds|limit|out of memory|overflow"


def model_info(model: Path):
    return metal_mps("info", model, timeout=120)


def test_reshape_shape_input_declared_2_pow_31(tmp_path):
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [4])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [1 << 31])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    node = helper.make_node("Reshape", ["data", "shape"], ["out"], name="reshape")
    model = save_model(tmp_path / "reshape.onnx", [node], [data, shape], [out])
    assert_clean_error(model_info(model), r"(?i)reshape|rank")


@pytest.mark.parametrize("length", [(1 << 63) - 1, 1 << 40])
def test_reshape_shape_input_declared_huge(tmp_path, length):
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [4])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [length])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    node = helper.make_node("Reshape", ["data", "shape"], ["out"], name="reshape")
    model = save_model(tmp_path / "reshape.onnx", [node], [data, shape], [out])
    assert_clean_error(model_info(model), r"(?i)reshape|rank")


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [0, 0, 1 << 40, 1 << 40]])
def test_conv_huge_stride_runtime_weights(tmp_path, pads):
    # Once: an abort asking for 68 GB of phase planes. The answer is small: each output pixel
    # reads one input pixel (the rest is padding), so only the origin is non-zero.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=[1 << 31, 1 << 31], pads=pads)
    model = save_model(tmp_path / "conv.onnx", [node], [x, w], [y])
    np.save(tmp_path / "x.npy", np.full((1, 1, 4, 4), 3, np.float32))
    np.save(tmp_path / "w.npy", np.full((1, 1, 1, 1), 2, np.float32))
    p = run_cli(model, {"x": tmp_path / "x.npy", "w": tmp_path / "w.npy"}, tmp_path)
    assert p.returncode == 0, p.stderr
    side = 1 + (4 + pads[2] - 1) // (1 << 31)
    expected = np.zeros((1, 1, side, side), np.float32)
    expected[0, 0, 0, 0] = 6
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_constant_of_shape_beyond_tensor_cap(tmp_path):
    # A constant the folder would build at load: 2^40 floats.
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape")
    node = helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos")
    add = helper.make_node("Add", ["x", "big"], ["y"], name="add")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = save_model(tmp_path / "cos.onnx", [node, add], [x], [y], [shape])
    assert_clean_error(model_info(model), SIZE_ERROR)


def test_tensor_cap_is_configurable(tmp_path):
    # 64 KiB of weights: refused under a 1 KiB cap, loaded without one.
    w = numpy_helper.from_array(np.ones((16384,), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [16384])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16384])
    model = save_model(tmp_path / "w.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [w])
    assert model_info(model).returncode == 0
    p = metal_mps("info", model, "--max-tensor-bytes", "1024")
    assert_clean_error(p, r"(?i)w.*65536|65536.*1024|limit")


def test_dynamic_dims_element_count_wraps(tmp_path):
    # [4, 2^62] floats wrap to 0 bytes in unchecked arithmetic.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = numpy_helper.from_array(np.array([4, 1 << 62], np.int64), "shape")
    node = helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")
    model = save_model(tmp_path / "expand.onnx", [node], [x], [y], [shape])
    np.save(tmp_path / "x.npy", np.ones((1, 1), np.float32))
    p = run_cli(model, {"x": tmp_path / "x.npy"}, tmp_path)
    assert_clean_error(p, SIZE_ERROR)


# ---- files outside the model's folder --------------------------------------------------------

def test_integer_max_pool_with_a_huge_output(tmp_path):
    # Once: an abort allocating the 2^40-element output of an INT8 MaxPool before checking it.
    x = helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, None)
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[1, 1],
                            pads=[0, 0, 1 << 20, 1 << 20])
    model = save_model(tmp_path / "pool.onnx", [node], [x], [y])
    np.save(tmp_path / "x.npy", np.ones((1, 1, 1, 1), np.int8))
    p = run_cli(model, {"x": tmp_path / "x.npy"}, tmp_path)
    assert_clean_error(p, SIZE_ERROR)


def endless_loop_model(path: Path) -> Path:
    """A Loop of i64::MAX trips that keeps only a counter: no memory grows, only time."""
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [])],
        initializer=[one])
    trips = numpy_helper.from_array(np.array((1 << 63) - 1, np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("Loop", ["trips", "cond", "x"], ["y"], name="endless", body=body)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    return save_model(path, [node], [x], [y], [trips, cond])


def test_a_run_that_never_ends_is_stopped_at_the_time_limit(tmp_path):
    import time

    model = endless_loop_model(tmp_path / "endless.onnx")
    np.save(tmp_path / "x.npy", np.array(0.0, np.float32))
    start = time.time()
    p = metal_mps("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path,
                  "--max-run-secs", "1", timeout=60)
    elapsed = time.time() - start
    assert_clean_error(p, r"timed out.*1 s.*METAL_MPS_MAX_RUN_SECS")
    assert elapsed < 10, elapsed


def external_model(folder: Path, location: str, length: int = 16) -> Path:
    """y = x + w where w (4 floats) lives in external data at `location`."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[length // 4])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [length // 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [length // 4])
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(folder / "model.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [w])


REFUSED = r"(?i)outside the model's folder|must stay"


def test_external_data_symlink_to_file(tmp_path):
    # A link beside the model to /etc/passwd, and one to a file that does not exist: both
    # refused, with the same message.
    runs = {}
    for name, target in (("existing", "/etc/passwd"), ("missing", "/etc/no-such-file-here")):
        folder = tmp_path / name
        folder.mkdir()
        os.symlink(target, folder / "weights.bin")
        runs[name] = model_info(external_model(folder, "weights.bin"))
        assert_clean_error(runs[name], REFUSED)
        assert "root:" not in runs[name].stdout
    messages = {k: (p.stderr + p.stdout).replace(str(tmp_path / k), "<dir>") for k, p in runs.items()}
    assert messages["existing"] == messages["missing"]


@pytest.mark.parametrize("location", ["./link", "dir/passwd", "sub/../link"])
def test_external_data_links_and_dirs(tmp_path, location):
    folder = tmp_path / "m"
    folder.mkdir()
    os.symlink("/etc/passwd", folder / "link")
    os.symlink("/etc", folder / "dir")
    (folder / "sub").mkdir()
    assert_clean_error(model_info(external_model(folder, location)), REFUSED)


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../../../etc/passwd", "..", "."])
def test_external_data_absolute_and_parent(tmp_path, location):
    assert_clean_error(model_info(external_model(tmp_path / "m", location)), REFUSED)


def test_external_data_inside_folder_still_loads(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    w = np.arange(4, dtype=np.float32)
    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_bytes(w.tobytes())
    # a link that stays inside the folder is fine
    os.symlink("sub/w.bin", folder / "inside_link")
    x = np.ones(4, np.float32)
    np.save(tmp_path / "x.npy", x)
    for loc in ("sub/w.bin", "./sub/w.bin", "inside_link"):
        model = external_model(folder, loc)
        p = run_cli(model, {"x": tmp_path / "x.npy"}, tmp_path)
        assert p.returncode == 0, p.stderr
        (expected,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
