#!/usr/bin/env python3
"""Run the ONNX conformance cases through `metal-mps test` and check them against a manifest.

The manifest (tests/conformance/manifest.txt, or manifest-gpu.txt with --device gpu) lists case
paths relative to the generated case directory (scripts/gen_onnx_cases.py), one per line; each
listed case must PASS. Every other case is a comment line `# <case>: <the engine's message>`.

  python scripts/conformance.py                 # run the whole scope, check the CPU manifest
  python scripts/conformance.py --device gpu    # the same on the GPU engine
  python scripts/conformance.py --update        # run the whole scope and rewrite the manifest
  python scripts/conformance.py --list-scope    # print the cases in scope

Scope: the whole generated node suite (cases the generator could not write, listed in
node-skipped.txt, count as not passing with its reason) and every case of the pytorch-converted,
pytorch-operator and simple suites. A check run fails when a listed case does not pass; a case
that passes without being listed is reported (run --update to list it).
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


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ROOT / "build" / "onnx-cases"
MANIFESTS = {
    "cpu": ROOT / "tests" / "conformance" / "manifest.txt",
    "gpu": ROOT / "tests" / "conformance" / "manifest-gpu.txt",
}
WHOLE_SUITES = ("pytorch-converted", "pytorch-operator", "simple")
CHUNK = 300  # case paths per `metal-mps test` invocation
LINE_RE = re.compile(r"^(PASS|FAIL|ERROR|SKIP) (\S+?)(?:: (.*))?$")


def scope(cases: Path) -> list[str]:
    """Case paths (relative to `cases`) that the conformance run considers."""
    out = []
    for suite in ("node", *WHOLE_SUITES):
        sd = cases / suite
        for d in sorted(sd.iterdir()) if sd.is_dir() else []:
            if (d / "model.onnx").is_file():
                out.append(f"{suite}/{d.name}")
    return sorted(out + list(not_generated(cases)))


def not_generated(cases: Path) -> dict[str, str]:
    """Node cases the generator could not write: {path: reason}."""
    listing = cases / "node-skipped.txt"
    out = {}
    for line in listing.read_text().splitlines() if listing.is_file() else []:
        name, _, reason = line.partition(": ")
        if name:
            out[f"node/{name}"] = f"not generated: {reason}"
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
    skipped = not_generated(cases)
    results: dict[str, tuple[str, str]] = {p: ("ERROR", skipped[p]) for p in paths if p in skipped}
    groups: dict[str, list[str]] = {}
    for p in paths:
        if p in skipped:
            continue
        groups.setdefault(p.split("/", 1)[0], []).append(p)
    chunks = [g[i : i + CHUNK] for g in groups.values() for i in range(0, len(g), CHUNK)]
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
        node_total = sum(1 for p in in_scope if p.startswith("node/"))
        node_pass = sum(1 for p, (st, _) in results.items() if st == "PASS" and p.startswith("node/"))
        print(f"node suite: {node_pass} of {node_total} pass on {args.device}")
        return 0

    listed, excluded = read_manifest(manifest)
    if not listed:
        print(f"warning: {manifest} lists no cases (generate it with --update)", file=sys.stderr)
    listed_set = set(listed)
    absent = [p for p in listed if p not in in_scope]
    results = run_cases(args.bin, args.cases, in_scope, extra, args.jobs)
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
    newly = [p for p in in_scope if p not in listed_set and results[p][0] == "PASS"]
    for p in newly:
        print(f"newly passing (not in the manifest; run --update): {p}")
    unknown = [p for p in in_scope if p not in listed_set and p not in excluded]
    if unknown:
        print(f"note: {len(unknown)} cases are neither listed nor excluded (e.g. {unknown[0]}); "
              "run --update", file=sys.stderr)
    passing = sum(1 for st, _ in results.values() if st == "PASS")
    node_total = sum(1 for p in in_scope if p.startswith("node/"))
    node_pass = sum(1 for p, (st, _) in results.items() if st == "PASS" and p.startswith("node/"))
    print(f"whole scope: {passing} of {len(in_scope)} cases pass on {args.device} "
          f"(node suite {node_pass} of {node_total})")
    print(f"{len(listed) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
