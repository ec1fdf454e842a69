"""What only metal-mps serve has: Prometheus metrics, poll mode, graceful
shutdown, and a perf_analyzer smoke load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from clients import InferenceServerException, connect, infer
from conftest import ROOT, Server, http_status, make_repository


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample (labels matched as a subset)."""
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


def test_metrics_use_triton_names(server):
    before = scrape(server.metrics_url)
    c = connect("http", (server.http_url, server.grpc_url))
    x = np.zeros((2, 4), np.float32)
    infer(c, "http", "tiny", x, version="1")
    with pytest.raises(InferenceServerException):
        infer(c, "http", "tiny", np.zeros((2, 5), np.float32), version="1")
    after = scrape(server.metrics_url)
    labels = {"model": "tiny", "version": "1"}
    for name, delta in [("nv_inference_request_success", 1), ("nv_inference_count", 2), ("nv_inference_exec_count", 1)]:
        assert metric(after, name, **labels) - metric(before, name, **labels) == delta, name
    assert metric(after, "nv_inference_request_failure", reason="OTHER", **labels) >= 1
    for name in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_compute_input_duration_us",
                 "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
                 "metal_mps_memory_in_use_bytes", "metal_mps_memory_pooled_bytes"):
        metric(after, name, **labels)
    assert "# TYPE nv_inference_request_success counter" in after


def test_poll_mode_follows_the_repository(tmp_path):
    repo = make_repository(tmp_path / "repo", ["tiny"])
    s = Server(repo, ["--model-control-mode", "poll", "--repository-poll-secs", "1"]).start()
    try:
        c = connect("http", (s.http_url, s.grpc_url))
        assert c.is_model_ready("tiny")
        with pytest.raises(InferenceServerException, match="not allowed"):
            c.load_model("tiny")
        make_repository(repo, ["tiny_later"])
        wait_for(lambda: c.is_model_ready("tiny_later"), "tiny_later to load")
        shutil.rmtree(repo / "tiny_later")
        wait_for(lambda: not c.is_model_ready("tiny_later"), "tiny_later to unload")
        assert c.is_model_ready("tiny")
    finally:
        assert s.stop() == 0, s.log()


def test_startup_failure_leaves_other_models_serving(tmp_path):
    repo = make_repository(tmp_path / "repo", ["tiny", "broken"])
    s = Server(repo, ["--strict-readiness", "false"]).start()
    try:
        c = connect("http", (s.http_url, s.grpc_url))
        # Without strict readiness the server is ready before its models: wait for "tiny".
        deadline = time.time() + 30
        while not c.is_model_ready("tiny") and time.time() < deadline:
            time.sleep(0.05)
        assert c.is_model_ready("tiny")
        assert not c.is_model_ready("broken")
        broken = [r for r in c.get_model_repository_index() if r["name"] == "broken"][0]
        assert broken["state"] == "UNAVAILABLE" and "sequence_batching" in broken["reason"]
        assert http_status(f"http://{s.http_url}/v2/health/ready") == 200
    finally:
        assert s.stop() == 0, s.log()


def test_sigterm_finishes_in_flight_requests(tmp_path, reference):
    """A request waiting in cnn_slow's queue when SIGTERM comes is still answered."""
    repo = make_repository(tmp_path / "repo", ["cnn_slow"])
    s = Server(repo).start()
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    c = connect("grpc", (s.http_url, s.grpc_url))
    answers: list = []

    def run():
        try:
            answers.append(infer(c, "grpc", "cnn_slow", x).as_numpy("output"))
        except InferenceServerException as e:
            answers.append(e)

    t = threading.Thread(target=run)
    t.start()
    # SIGTERM once the request is in the model's queue.
    wait_for(lambda: metric(scrape(s.metrics_url), "nv_inference_pending_request_count", model="cnn_slow") == 1,
             "the request to be queued", timeout=5)
    code = s.stop()
    t.join()
    assert code == 0, s.log()
    assert "SIGTERM received" in s.log()
    assert len(answers) == 1 and isinstance(answers[0], np.ndarray), ([str(a) for a in answers], s.log()[-2000:])
    np.testing.assert_allclose(answers[0], reference("simple_cnn", x), rtol=1e-4, atol=1e-4)
    assert http_status(f"http://{s.http_url}/v2/health/live") == 0  # gone


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_smoke(server, protocol):
    # perf_analyzer from the tritonclient==2.51.0 wheel, unpacked into build/perf-analyzer on first use.
    sys.path.insert(0, str(ROOT / "scripts" / "triton"))
    import triton_env  # noqa: PLC0415

    binary, env = triton_env.perf_analyzer()
    url = server.http_url if protocol == "http" else server.grpc_url
    # Count windows with a wide stability band: a smoke load, not a benchmark.
    cmd = [str(binary), "-m", "tiny", "-u", url, "-i", protocol, "--concurrency-range", "2",
           "--measurement-mode", "count_windows", "--measurement-request-count", "200",
           "--stability-percentage", "1000", "--max-trials", "5"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r"Concurrency: 2, throughput: ([\d.]+) infer/sec", out)
    assert m and float(m.group(1)) > 0, out


def wait_for(cond, what: str, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
