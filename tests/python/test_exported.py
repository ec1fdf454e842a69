"""Models written by PyTorch's own exporters, run by the `metal-mps` CLI against onnxruntime.

tests/models/exported/ holds real torchvision / transformers architectures and common patterns
(a YOLO-style head, a segmentation decoder, an LSTM tagger, an If), shrunken and with random
weights, exported by the TorchScript-based exporter (opset 17) and the dynamo exporter (opset 18)
with dynamic batch and sequence dims (scripts/export_fixtures.py made them on the H200 machine;
manifest.json describes their inputs). Each runs at two batch sizes (two sequence lengths for
the sequence models) on the CPU and GPU engines and must match onnxruntime within rtol 1e-3 /
atol 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from test_models import ATOL, RTOL, gpu_available, metal_mps, models  # noqa: F401 (fixtures)

FIXTURES = Path(__file__).resolve().parents[1] / "models" / "exported"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
# (batch, sequence length): two of each.
SIZES = [(1, 8), (3, 13)]


def make_inputs(spec: dict, declared: dict, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs of the sizes asked for, where the model left the dim dynamic (an exporter may have
    fixed one, e.g. the dynamo exporter fixes an LSTM's sequence length to the example's)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, s in spec.items():
        shape = [
            fixed if isinstance(fixed, int) else {"batch": batch, "seq": seq}[d] if isinstance(d, str) else d
            for d, fixed in zip(s["shape"], declared[name])
        ]
        if s["dtype"] == "int64" and s.get("ones"):
            mask = np.ones(shape, np.int64)
            if batch > 1:
                mask[1:, shape[-1] - 3:] = 0  # padded rows
            out[name] = mask
        elif s["dtype"] == "int64":
            out[name] = rng.integers(0, s["high"], shape, dtype=np.int64)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
            # Both branches of a data-dependent If: the sign of the mean follows the seed.
            out[name] = x + (0.5 if seed % 2 else -0.5)
    return out


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("size", SIZES, ids=[f"b{b}-s{s}" for b, s in SIZES])
@pytest.mark.parametrize("fixture", sorted(MANIFEST))
def test_exported_model_matches_onnxruntime(fixture, size, device, tmp_path, request):
    if device == "gpu":
        request.getfixturevalue("gpu_available")
    spec = MANIFEST[fixture]["inputs"]
    batch, seq = size
    model = FIXTURES / fixture
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    declared = {i.name: i.shape for i in sess.get_inputs()}
    inputs = make_inputs(spec, declared, batch, seq, seed=batch)
    expected = sess.run(None, inputs)
    args = ["run", model, "--output-dir", tmp_path, "--device", device]
    for name, value in inputs.items():
        np.save(tmp_path / f"in_{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / f'in_{name}.npy'}"]
    p = metal_mps(*args)
    assert p.returncode == 0, f"metal-mps run failed ({p.returncode}):\n{p.stderr}{p.stdout}"
    assert "panicked" not in p.stderr
    for out, want in zip(sess.get_outputs(), expected):
        got = np.load(tmp_path / f"{''.join(c if c.isalnum() or c in '_.-' else '_' for c in out.name)}.npy")
        assert got.shape == want.shape, f"{out.name}: shape {got.shape}, onnxruntime {want.shape}"
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=out.name)
