#!/usr/bin/env python3
"""Run the ONNX conformance cases through `metal-mps test` and check them against a manifest.

The manifest (tests/conformance/manifest.txt, or manifest-gpu.txt with --device gpu) lists case
paths relative to the generated case directory (scripts/gen_onnx_cases.py), one per line; each
listed case must PASS. Excluded cases are comment lines `# <case>: <reason>`.

  python scripts/conformance.py                 # check the CPU manifest (exit 1 on regressions)
  python scripts/conformance.py --device gpu    # check the GPU manifest
  python scripts/conformance.py --update        # run the whole scope and rewrite the manifest
  python scripts/conformance.py --list-scope    # print the cases in scope

Scope: node cases all of whose nodes use the ops in SCOPE_OPS (so most `_expanded` cases are
out), plus every case of the pytorch-converted, pytorch-operator and simple suites.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ROOT / "build" / "onnx-cases"
MANIFESTS = {
    "cpu": ROOT / "tests" / "conformance" / "manifest.txt",
    "gpu": ROOT / "tests" / "conformance" / "manifest-gpu.txt",
}
SCOPE_OPS = frozenset(
    """Add Sub Mul Div Conv MaxPool AveragePool BatchNormalization Relu Sigmoid Tanh Softmax
    MatMul Gemm Reshape Transpose Concat Split ReduceMean ReduceSum ReduceMax ReduceMin Constant
    Identity Dropout Flatten Squeeze Unsqueeze Shape Gather Cast Clip GlobalAveragePool
    GlobalMaxPool Sum Sqrt Pow Exp Log Neg Abs Pad LeakyRelu HardSigmoid HardSwish LRN""".split()
)
WHOLE_SUITES = ("pytorch-converted", "pytorch-operator", "simple")
CHUNK = 300  # case paths per `metal-mps test` invocation
LINE_RE = re.compile(r"^(PASS|FAIL|ERROR|SKIP) (\S+?)(?:: (.*))?$")


def model_ops(model_path: Path) -> set[str]:
    """Op types used by a model's main graph (non-default domains are prefixed `domain:`)."""
    m = onnx.load(str(model_path), load_external_data=False)
    return {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}" for n in m.graph.node}


def scope(cases: Path) -> list[str]:
    """Case paths (relative to `cases`) that the conformance run considers."""
    out = []
    node = cases / "node"
    for d in sorted(node.iterdir()) if node.is_dir() else []:
        if (d / "model.onnx").is_file() and model_ops(d / "model.onnx") <= SCOPE_OPS:
            out.append(f"node/{d.name}")
    for suite in WHOLE_SUITES:
        sd = cases / suite
        for d in sorted(sd.iterdir()) if sd.is_dir() else []:
            if (d / "model.onnx").is_file():
                out.append(f"{suite}/{d.name}")
    return out


def read_manifest(path: Path) -> tuple[list[str], dict[str, str]]:
    """Returns (cases expected to pass, {excluded case: reason})."""
    listed, excluded = [], {}
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"^#\s*([\w.+-]+/\S+): (.*)$", line)
            if m:
                excluded[m.group(1)] = m.group(2)
            continue
        listed.append(line)
    return listed, excluded


def one_line(msg: str, limit: int = 240) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def invoke(binary: str, cases: Path, paths: list[str], extra: list[str], timeout: float) -> dict[str, tuple[str, str]]:
    """Run one `metal-mps test` over `paths`; returns {path: (status, message)} for the cases
    it reported. If the process dies (crash, timeout) before reporting every case, the missing
    ones are re-run one at a time so the crash is pinned on the case that caused it."""
    by_name = {p.rsplit("/", 1)[1]: p for p in paths}
    cmd = [binary, "test", *[str(cases / p) for p in paths], *extra]
    results: dict[str, tuple[str, str]] = {}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
        stdout, stderr = proc.stdout, proc.stderr
        if proc.returncode < 0:
            why = f"crashed (signal {-proc.returncode})"
        else:
            why = f"no result line (exit status {proc.returncode})"
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        why = f"timed out after {timeout:.0f} s"
    for line in stdout.splitlines():
        m = LINE_RE.match(line.strip())
        if m and m.group(2) in by_name:
            results[by_name[m.group(2)]] = (m.group(1), one_line(m.group(3) or ""))
    missing = [p for p in paths if p not in results]
    if not missing:
        return results
    if len(paths) == 1:
        last = [l for l in stderr.splitlines() if l.strip()][-1:]
        results[paths[0]] = ("ERROR", one_line(f"{why}: {last[0]}" if last else why))
        return results
    for p in missing:
        results.update(invoke(binary, cases, [p], extra, min(timeout, 120)))
    return results


def run_cases(binary: str, cases: Path, paths: list[str], extra: list[str], jobs: int) -> dict[str, tuple[str, str]]:
    """Runs `paths` in a few big invocations, one suite per invocation (case names are
    directory names, unique within a suite)."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        groups.setdefault(p.split("/", 1)[0], []).append(p)
    chunks = [g[i : i + CHUNK] for g in groups.values() for i in range(0, len(g), CHUNK)]
    results: dict[str, tuple[str, str]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for r in ex.map(lambda c: invoke(binary, cases, c, extra, 900), chunks):
            results.update(r)
    return results


def manifest_reason(status: str, msg: str) -> str:
    if status == "ERROR":
        return msg or "error"
    if status == "FAIL":
        return f"wrong result: {msg}" if msg else "wrong result"
    return f"skipped: {msg}" if msg else "skipped"


def write_manifest(path: Path, device: str, results: dict[str, tuple[str, str]]) -> None:
    header = [
        f"# ONNX conformance cases expected to PASS with `metal-mps test --device {device}`.",
        "# Paths are relative to the case dir made by `python scripts/gen_onnx_cases.py build/onnx-cases`.",
        f"# Regenerate with `python scripts/conformance.py --update{' --device gpu' if device == 'gpu' else ''}`;",
        "# cases in scope that do not pass are listed as `# <case>: <the engine's message>`.",
    ]
    body = []
    for p in sorted(results):
        status, msg = results[p]
        body.append(p if status == "PASS" else f"# {p}: {manifest_reason(status, msg)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + body) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="generated case dir (default: %(default)s)")
    ap.add_argument("--bin", default=os.environ.get("METAL_MPS_BIN", str(ROOT / "target" / "release" / "metal-mps")))
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--manifest", type=Path, help="default: tests/conformance/manifest[-gpu].txt")
    ap.add_argument("--update", action="store_true", help="run the whole scope and rewrite the manifest")
    ap.add_argument("--list-scope", action="store_true", help="print the cases in scope and exit")
    ap.add_argument("--rtol", type=float)
    ap.add_argument("--atol", type=float)
    ap.add_argument("-j", "--jobs", type=int, default=1, help="parallel `metal-mps test` processes")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case's result")
    args = ap.parse_args()
    manifest = args.manifest or MANIFESTS[args.device]

    if not (args.cases / "node").is_dir():
        print(f"no cases in {args.cases}: run scripts/gen_onnx_cases.py {args.cases}", file=sys.stderr)
        return 2
    in_scope = scope(args.cases)
    if args.list_scope:
        print("\n".join(in_scope))
        print(f"{len(in_scope)} cases in scope", file=sys.stderr)
        return 0
    if not Path(args.bin).is_file():
        print(f"metal-mps binary not found at {args.bin} (cargo build --release, or set METAL_MPS_BIN)", file=sys.stderr)
        return 2

    if args.device == "gpu" and not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")  # 0700; quiets Mesa (lavapipe)
        atexit.register(shutil.rmtree, os.environ["XDG_RUNTIME_DIR"], True)
    extra = ["--device", args.device]
    if args.rtol is not None:
        extra += ["--rtol", str(args.rtol)]
    if args.atol is not None:
        extra += ["--atol", str(args.atol)]

    if args.update:
        results = run_cases(args.bin, args.cases, in_scope, extra, args.jobs)
        write_manifest(manifest, args.device, results)
        counts = {s: sum(1 for st, _ in results.values() if st == s) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
        print(f"wrote {manifest.relative_to(ROOT) if manifest.is_relative_to(ROOT) else manifest}: "
              f"{counts['PASS']} listed, {len(results) - counts['PASS']} excluded "
              f"({counts['FAIL']} FAIL, {counts['ERROR']} ERROR, {counts['SKIP']} SKIP)")
        print(f"{counts['PASS']} passed, {len(results) - counts['PASS']} failed")
        return 0

    listed, excluded = read_manifest(manifest)
    if not listed:
        print(f"warning: {manifest} lists no cases (generate it with --update)", file=sys.stderr)
    absent = [p for p in listed if not (args.cases / p / "model.onnx").is_file()]
    results = run_cases(args.bin, args.cases, [p for p in listed if p not in absent], extra, args.jobs)
    for p in absent:
        results[p] = ("ERROR", "case directory missing (regenerate the cases?)")
    bad = 0
    for p in listed:
        status, msg = results[p]
        if status != "PASS":
            bad += 1
            print(f"{status} {p}: {msg}" if msg else f"{status} {p}")
        elif args.verbose:
            print(f"PASS {p}")
    known = set(listed) | set(excluded)
    unknown = [p for p in in_scope if p not in known]
    if unknown:
        print(f"note: {len(unknown)} in-scope cases are neither listed nor excluded (e.g. {unknown[0]}); "
              "consider --update", file=sys.stderr)
    print(f"{len(listed) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
