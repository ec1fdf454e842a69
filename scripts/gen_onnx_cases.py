#!/usr/bin/env python3
"""Generate the ONNX backend conformance cases into OUTDIR.

Node cases come from the pinned onnx package's own definitions
(`onnx.backend.test.case.node.collect_testcases()`; the wheel ships no node data) and are
written as OUTDIR/node/<name>/model.onnx + test_data_set_N/{input,output}_K.pb. Cases whose
inputs or outputs are sequences or optionals are written as the ONNX backend test data does
(`numpy_helper.from_list` / `from_optional`: SequenceProto / OptionalProto .pb files). Cases
that cannot be written (maps) are listed with the reason in OUTDIR/node-skipped.txt (`<name>: <reason>`), so that the conformance
run accounts for every case of the suite.
The wheel's shipped pytorch-converted, pytorch-operator and simple suites are copied to
OUTDIR/<suite>/. Re-running is safe: files whose content is unchanged are not rewritten.

Usage: python scripts/gen_onnx_cases.py OUTDIR [-q]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

SHIPPED_SUITES = ("pytorch-converted", "pytorch-operator", "simple")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless it already holds exactly that; True when written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.write_bytes(data)
    return True


def value_bytes(value, vi: onnx.ValueInfoProto) -> bytes:
    """Serialize one input/output value as its declared type says (a TensorProto, or a
    SequenceProto / OptionalProto as onnx's backend test data has them); raise ValueError for
    other types."""
    kind = vi.type.WhichOneof("value")
    if kind == "sequence_type":
        return numpy_helper.from_list(value, vi.name).SerializeToString()
    if kind == "optional_type":
        return numpy_helper.from_optional(value, vi.name).SerializeToString()
    if kind != "tensor_type":
        raise ValueError(f"{vi.name!r} has {kind.removesuffix('_type')} type, not tensor")
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    if not isinstance(value, (np.ndarray, np.generic)):
        raise ValueError(f"{vi.name!r} is a {type(value).__name__}, not an array")
    return numpy_helper.from_array(np.asarray(value), vi.name).SerializeToString()


def write_case(case, case_dir: Path) -> int:
    """Write one node case; returns the number of files written (0 when up to date)."""
    graph = case.model.graph
    # Serialize everything first so a failing case leaves nothing half-written behind.
    sets = []
    for inputs, outputs in case.data_sets:
        if len(inputs) > len(graph.input) or len(outputs) > len(graph.output):
            raise ValueError("more values than graph inputs/outputs")
        ins = [value_bytes(v, graph.input[j]) for j, v in enumerate(inputs)]
        outs = [value_bytes(v, graph.output[j]) for j, v in enumerate(outputs)]
        sets.append((ins, outs))

    written = 0
    case_dir.mkdir(parents=True, exist_ok=True)
    written += write_if_changed(case_dir / "model.onnx", case.model.SerializeToString())
    for i, (ins, outs) in enumerate(sets):
        ds = case_dir / f"test_data_set_{i}"
        ds.mkdir(exist_ok=True)
        expected = {f"input_{j}.pb": b for j, b in enumerate(ins)}
        expected.update({f"output_{j}.pb": b for j, b in enumerate(outs)})
        for stale in ds.iterdir():
            if stale.name not in expected:
                stale.unlink()
        for name, data in expected.items():
            written += write_if_changed(ds / name, data)
    for extra in case_dir.glob("test_data_set_*"):
        if int(extra.name.rsplit("_", 1)[1]) >= len(sets):
            shutil.rmtree(extra)
    return written


def generate_node_cases(outdir: Path, quiet: bool = False) -> tuple[int, int, int]:
    """Returns (written cases, up-to-date cases, skipped cases)."""
    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    node_dir = outdir / "node"
    node_dir.mkdir(parents=True, exist_ok=True)
    written = unchanged = skipped = 0
    kept = set()
    reasons = []
    for case in sorted(cases, key=lambda c: c.name):
        try:
            n = write_case(case, node_dir / case.name)
        except Exception as e:  # noqa: BLE001 - any unsupported value kind becomes a skip
            if not quiet:
                print(f"skip node/{case.name}: {e}")
            skipped += 1
            reasons.append(f"{case.name}: {' '.join(str(e).split())}")
            if (node_dir / case.name).exists():
                shutil.rmtree(node_dir / case.name)
            continue
        kept.add(case.name)
        if n:
            written += 1
        else:
            unchanged += 1
    for old in node_dir.iterdir():
        if old.name not in kept:
            shutil.rmtree(old)
    write_if_changed(outdir / "node-skipped.txt", "".join(f"{r}\n" for r in reasons).encode())
    return written, unchanged, skipped


def copy_shipped_suites(outdir: Path) -> dict[str, int]:
    data_dir = Path(onnx.__file__).parent / "backend" / "test" / "data"
    counts = {}
    for suite in SHIPPED_SUITES:
        src, dst = data_dir / suite, outdir / suite
        shutil.copytree(src, dst, dirs_exist_ok=True)
        counts[suite] = sum(1 for d in dst.iterdir() if (d / "model.onnx").is_file())
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("-q", "--quiet", action="store_true", help="don't list the skipped cases")
    args = ap.parse_args()
    outdir: Path = args.outdir
    outdir.mkdir(parents=True, exist_ok=True)

    written, unchanged, skipped = generate_node_cases(outdir, args.quiet)
    print(
        f"node: {written + unchanged} cases ({written} written, {unchanged} up to date), "
        f"{skipped} skipped"
    )
    for suite, n in copy_shipped_suites(outdir).items():
        print(f"{suite}: {n} cases")
    print(f"onnx {onnx.__version__} cases in {os.path.abspath(outdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
