"""A bounded slice of the request fuzzer (fuzz_requests.py) and its regression cases.

METAL_MPS_FUZZ_SECONDS sets the slice (default 20 s; scripts/test-all.sh runs 60 s); the seed
is METAL_MPS_FUZZ_SEED (default: fixed, so a failure reproduces). Every file under
tests/server/fuzz_crashers/ (a request that once failed) is replayed first.
"""

from __future__ import annotations

import os

import grpc
import pytest

import fuzz_requests as fz
from hardening import serve_with

SECONDS = float(os.environ.get("METAL_MPS_FUZZ_SECONDS", "20"))
SEED = int(os.environ.get("METAL_MPS_FUZZ_SEED", "12"))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = serve_with(tmp_path_factory.mktemp("fuzz"), *fz.FUZZ_SERVER_ARGS)
    yield s
    assert s.stop() == 0, s.log()


@pytest.mark.parametrize("case", sorted(p.name for p in fz.CRASHERS.glob("*")) or ["none"])
def test_regression_cases(srv, case):
    if case == "none":
        pytest.skip("no crasher has been kept")
    data = (fz.CRASHERS / case).read_bytes()
    if case.endswith(".http"):
        problem = fz.judge_http(srv.http_port, data, may_close=True, timeout=20)
    else:
        with grpc.insecure_channel(srv.grpc_url) as channel:
            problem = fz.judge_grpc(channel, data, timeout=20)
    assert problem is None, problem
    assert srv.proc.poll() is None, srv.log()[-3000:]


def test_fuzzed_requests_never_crash_or_hang_the_server(srv):
    report = fz.run(srv.http_port, srv.grpc_url, SECONDS, SEED, alive=lambda: srv.proc.poll() is None)
    assert not report.failures, "\n".join(report.failures) + "\n" + srv.log()[-3000:]
    assert report.good >= report.bad // 4 > 0, (report.good, report.bad)
    assert srv.proc.poll() is None
