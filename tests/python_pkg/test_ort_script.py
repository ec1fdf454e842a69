"""A script written for onnxruntime (ort_script.py) runs unchanged with metal_mps, except for its
import line: both runs give the same outputs (within rtol 1e-3 / atol 1e-4)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("ort_script.py")
ORT_IMPORT = "import onnxruntime as ort"


def load_script(import_line: str) -> types.ModuleType:
    source = SCRIPT.read_text()
    assert source.count(ORT_IMPORT) == 1
    module = types.ModuleType(f"ort_script_{import_line.split()[1]}")
    exec(compile(source.replace(ORT_IMPORT, import_line), str(SCRIPT), "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("name", ["tiny", "simple_cnn", "resnet_block"])
def test_script_runs_unchanged_but_for_the_import(built_models, name):
    model = str(built_models / f"{name}.onnx")
    with_ort = load_script(ORT_IMPORT).main(model)
    with_mps = load_script("import metal_mps as ort").main(model)
    assert with_mps[0] == with_ort[0]
    assert with_mps[2] == with_ort[2] == ["CPUExecutionProvider"]
    assert list(with_mps[1]) == list(with_ort[1])
    for out, want in with_ort[1].items():
        got = with_mps[1][out]
        assert got.dtype == want.dtype and got.shape == want.shape, out
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=out)
