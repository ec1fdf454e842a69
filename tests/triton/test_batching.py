"""Dynamic batching, instance groups and the statistics Triton shows for them."""

import re

import numpy as np
import tritonclient.http as httpclient
from conftest import assert_close, image, model_stats


def concurrent_infer(client, model: str, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Sends every input at once (async HTTP), returns the outputs in order."""
    pending = []
    for x in xs:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        pending.append(client.async_infer(model, [inp]))
    return [p.get_result().as_numpy("output") for p in pending]


def test_dynamic_batching_gathers_requests_and_answers_each(server, load, http, reference):
    load("batched_cnn")
    xs = [image(batch=1 + i % 2, seed=100 + i) for i in range(12)]
    outputs = concurrent_infer(http, "batched_cnn", xs)
    for x, y in zip(xs, outputs):
        assert_close(y, reference("simple_cnn", x))
    stats = model_stats(server, "batched_cnn")
    items = sum(x.shape[0] for x in xs)
    assert int(stats["inference_count"]) == items
    assert int(stats["execution_count"]) < items, stats
    assert int(stats["inference_stats"]["success"]["count"]) == len(xs)
    # Our own log line: one execute call received several requests.
    counts = [int(n) for n in re.findall(r"model 'batched_cnn' instance '[^']+': (\d+) request\(s\)", server.log_text())]
    assert max(counts) > 1, counts


def test_batch_statistics_and_memory_usage(server, load, http):
    load("batched_cnn")
    concurrent_infer(http, "batched_cnn", [image(seed=200 + i) for i in range(4)])
    stats = model_stats(server, "batched_cnn")
    assert stats["batch_stats"], stats
    for b in stats["batch_stats"]:
        assert int(b["compute_infer"]["count"]) > 0 and int(b["compute_infer"]["ns"]) > 0
    assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0
    assert int(stats["inference_stats"]["queue"]["count"]) > 0
    usage = stats["memory_usage"]
    assert usage and all(int(u["byte_size"]) > 0 for u in usage), usage
    assert {u["type"] for u in usage} <= {"CPU", "GPU"}


def test_two_instances_model_and_cpu(server, load, http, reference):
    load("two_instances")
    log = server.log_text()
    assert re.search(r"instance 'two_instances_0_0' of model 'two_instances' \(Model\): (cpu|gpu) engine", log), log[-3000:]
    assert "instance 'two_instances_1_0' of model 'two_instances' (Cpu): cpu engine" in log
    xs = [image(seed=300 + i) for i in range(8)]
    for x, y in zip(xs, concurrent_infer(http, "two_instances", xs)):
        assert_close(y, reference("simple_cnn", x))
    served_by = set(re.findall(r"model 'two_instances' instance '([^']+)': \d+ request", server.log_text()))
    assert served_by == {"two_instances_0_0", "two_instances_1_0"}, served_by
