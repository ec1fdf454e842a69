"""One session, many Python threads: the same outputs as serial runs, the GIL released while the
engine runs, and throughput that grows with threads up to the cores."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
from onnx import TensorProto, helper

import metal_mps

THREADS = 8


def chain_model(width: int = 96, depth: int = 48) -> bytes:
    """A chain of MatMul+Tanh on one row: too small for a kernel to spread over cores, so one run
    keeps about one core busy, and the cores can only be filled by concurrent runs."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        w = f"w{i}"
        inits.append(onnx.numpy_helper.from_array((rng.standard_normal((width, width)) / width**0.5).astype(np.float32), w))
        nodes += [helper.make_node("MatMul", [x, w], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        x = f"t{i}"
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_threads_sharing_a_session_match_serial_runs(built_models):
    sess = metal_mps.InferenceSession(str(built_models / "resnet_block.onnx"), providers=["CPUExecutionProvider"])
    arg = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in arg.shape]
    feeds = [{arg.name: np.random.default_rng(i).standard_normal(shape).astype(np.float32)} for i in range(3 * THREADS)]
    serial = [sess.run(None, f)[0] for f in feeds]
    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(lambda f: sess.run(None, f)[0], feeds))
    for i, (a, b) in enumerate(zip(serial, concurrent)):
        np.testing.assert_array_equal(b, a, err_msg=f"feed {i}")


def test_the_gil_is_released_while_the_engine_runs():
    sess = metal_mps.InferenceSession(chain_model(width=256, depth=200), providers=["CPUExecutionProvider"])
    x = {"x": np.ones((1, 256), np.float32)}
    done = threading.Event()
    ticks = 0

    def runner():
        for _ in range(20):
            sess.run(None, x)
        done.set()

    t = threading.Thread(target=runner)
    start = time.perf_counter()
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    elapsed = time.perf_counter() - start
    # Python code kept running in this thread the whole time the engine computed.
    assert ticks > 1000 and elapsed > 0, (ticks, elapsed)


def runs_per_second(sess, threads: int, runs_per_thread: int) -> float:
    x = {"x": np.ones((1, 96), np.float32)}
    barrier = threading.Barrier(threads + 1)

    def work():
        barrier.wait()
        for _ in range(runs_per_thread):
            sess.run(None, x)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    return threads * runs_per_thread / (time.perf_counter() - start)


def test_throughput_grows_with_threads_up_to_the_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    sess = metal_mps.InferenceSession(chain_model(), providers=["CPUExecutionProvider"])
    runs = 200
    runs_per_second(sess, 1, 20)  # warm-up: slot buffers, thread pool
    rates = {}
    for threads in sorted({1, min(2, cores), cores, THREADS}):
        # Best of three: other processes on the machine only ever slow a measurement down.
        rates[threads] = max(runs_per_second(sess, threads, runs // threads) for _ in range(3))
    load = os.getloadavg()[0]
    print("\nruns/s by Python threads:", {t: round(r) for t, r in rates.items()}, f"({cores} cores, load {load:.1f})")
    if cores >= 2 and load < cores - 1:
        # Serialized runs (a held GIL or lock) would give 1.0: concurrent runs fill idle cores.
        # (On a machine already busy there is no idle core to fill: only the check below holds.)
        assert rates[2] >= 1.2 * rates[1], rates
    # More threads than cores queue for them without collapsing (no lock convoy).
    assert rates[THREADS] >= 0.7 * rates[1], rates
