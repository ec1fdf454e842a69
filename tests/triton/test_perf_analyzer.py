"""perf_analyzer (from the tritonclient==2.51.0 wheel) runs a short load with no errors."""

import subprocess

import triton_env as te


def test_perf_analyzer_smoke(server, load, tmp_path):
    load("simple_cnn")
    binary, env = te.perf_analyzer()
    csv = tmp_path / "perf.csv"
    cmd = [
        str(binary), "-m", "simple_cnn", "-u", server.http_url, "-i", "http", "-b", "1",
        "--concurrency-range", "1:2", "--measurement-mode", "count_windows",
        "--measurement-request-count", "8", "--stability-percentage", "100", "--max-trials", "6",
        "-f", str(csv),
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "error" not in output.lower(), output
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("Concurrency,Inferences/Second"), rows
    assert len(rows) == 3, rows
    assert all(float(r.split(",")[1]) > 0 for r in rows[1:]), rows
