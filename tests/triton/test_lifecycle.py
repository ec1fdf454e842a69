"""Explicit model control: load, unload and reload cycles free everything."""

import time

from conftest import assert_close, image, infer_http, model_stats

CYCLES = 20
WARMUP = 5
# Headroom for allocator caching; a leak of one compiled model per cycle would exceed it.
MAX_GROWTH_BYTES = 24 << 20


def cycle(http, reference, i: int) -> None:
    http.load_model("lifecycle_cnn")
    x = image(batch=2, seed=600 + i)
    assert_close(infer_http(http, "lifecycle_cnn", x).as_numpy("output"), reference("simple_cnn", x))
    http.unload_model("lifecycle_cnn")
    # Unloading is asynchronous: wait until the model is gone.
    for _ in range(200):
        if not http.is_model_ready("lifecycle_cnn"):
            break
        time.sleep(0.05)


def test_load_unload_cycles_do_not_grow_memory(server, http, reference):
    for i in range(WARMUP):
        cycle(http, reference, i)
    before = server.rss_bytes()
    for i in range(CYCLES):
        cycle(http, reference, WARMUP + i)
    after = server.rss_bytes()
    print(f"server RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB over {CYCLES} load/infer/unload cycles")
    assert after - before < MAX_GROWTH_BYTES, f"RSS grew {(after - before) / 2**20:.1f} MiB over {CYCLES} cycles"
    log = server.log_text()
    assert log.count("successfully unloaded 'lifecycle_cnn'") >= WARMUP + CYCLES - 1
    http.load_model("lifecycle_cnn")
    assert http.is_model_ready("lifecycle_cnn")


def test_stats_endpoint_shows_our_statistics(server, load, http):
    load("simple_cnn")
    before = model_stats(server, "simple_cnn")
    infer_http(http, "simple_cnn", image(batch=3))
    after = model_stats(server, "simple_cnn")
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 3
    assert int(after["execution_count"]) == int(before.get("execution_count", 0)) + 1
    success = after["inference_stats"]["success"]
    assert int(success["count"]) == int(before["inference_stats"]["success"]["count"]) + 1
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert int(after["inference_stats"][phase]["ns"]) > 0, phase
    assert any(int(b["batch_size"]) == 3 for b in after["batch_stats"]), after["batch_stats"]
    assert after["memory_usage"], after
