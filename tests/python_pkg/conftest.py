"""Fixtures of the metal_mps Python package tests: the package must be installed (scripts/test-all.sh
builds the wheel and installs it into build/pyvenv with onnx, onnxruntime, numpy and pytest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "tests" / "models" / "exported"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def built_models(tmp_path_factory) -> Path:
    """simple_cnn, resnet_block, resnet50 and tiny (models/create_test_model.py) as <dir>/<name>.onnx."""
    spec = importlib.util.spec_from_file_location("create_test_model", ROOT / "models" / "create_test_model.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    out = tmp_path_factory.mktemp("models")
    for name, make in builder.MODELS.items():
        onnx.save(make(), str(out / f"{name}.onnx"))
    return out
