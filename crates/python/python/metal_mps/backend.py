"""``onnx.backend.base.Backend`` over metal_mps, for ONNX's backend test runner.

    import onnx.backend.test
    import metal_mps.backend
    globals().update(onnx.backend.test.BackendTest(metal_mps.backend, __name__).test_cases)

Device ``"CPU"`` runs the CPU engine; ``"GPU"`` the GPU engine (onnx's own device
types are CPU and CUDA: ``"CUDA"`` is not supported). Keyword arguments of
``prepare`` that name a ``SessionOptions`` attribute (``precision``,
``graph_optimization_level``, ...) set it; ``providers=`` overrides the device.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

from ._native import InferenceSession, SessionOptions, get_available_providers

_PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    "GPU": ["MetalMpsExecutionProvider", "CPUExecutionProvider"],
}


class MetalMpsRep(BackendRep):
    """A prepared model: ``run(inputs)`` with the inputs in the order of
    ``session.get_inputs()`` (a list), by name (a dict) or a single array.
    Values are what ``InferenceSession.run`` takes: arrays for tensors (text or
    object arrays for STRING), lists of arrays for sequences, ``None`` or the
    value for optionals; outputs come back the same way."""

    def __init__(self, session: InferenceSession) -> None:
        self.session = session
        self._inputs = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:  # noqa: ARG002
        if isinstance(inputs, dict):
            feed = inputs
        elif isinstance(inputs, np.ndarray) or np.isscalar(inputs):
            feed = {self._inputs[0]: inputs} if self._inputs else {}
        else:
            inputs = list(inputs)
            if len(inputs) > len(self._inputs):
                raise ValueError(
                    f"{len(inputs)} inputs given, the model has {len(self._inputs)}: {self._inputs}"
                )
            feed = dict(zip(self._inputs, inputs))
        outputs = self.session.run(None, feed)
        return namedtupledict("Outputs", self._outputs)(*outputs)


class MetalMpsBackend(Backend):
    """Prepares ONNX models for metal_mps's CPU or GPU engine."""

    @classmethod
    def supports_device(cls, device: str) -> bool:
        kind = str(device).split(":")[0].upper()
        if kind == "CPU":
            return True
        return kind == "GPU" and "MetalMpsExecutionProvider" in get_available_providers()

    @classmethod
    def is_compatible(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> bool:  # noqa: ARG003
        return cls.supports_device(device)

    @classmethod
    def prepare(
        cls, model: ModelProto | bytes | str, device: str = "CPU", **kwargs: Any
    ) -> MetalMpsRep:
        options = SessionOptions()
        providers = kwargs.pop("providers", None)
        for key, value in kwargs.items():
            if hasattr(options, key):
                setattr(options, key, value)
        if providers is None:
            kind = str(device).split(":")[0].upper()
            if kind not in _PROVIDERS:
                raise ValueError(f"device '{device}' is not supported (CPU or GPU)")
            providers = _PROVIDERS[kind]
        if isinstance(model, ModelProto):
            model = model.SerializeToString()
        return MetalMpsRep(InferenceSession(model, options, providers=providers))

    @classmethod
    def run_model(
        cls, model: ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: NodeProto,
        inputs: Sequence[Any],
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,  # noqa: ARG003
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Runs one node: a model is built around it with the inputs' dtypes
        and shapes (``opset_version=`` picks the opset, else onnx's current one)."""
        names = [n for n in node.input if n]
        if len(inputs) != len(names):
            raise ValueError(f"node '{node.name}' has {len(names)} inputs, {len(inputs)} given")
        # A list is a sequence input (of its first array's dtype); anything else a tensor.
        values = [
            [np.asarray(e) for e in x] if isinstance(x, (list, tuple)) else np.asarray(x)
            for x in inputs
        ]
        graph = helper.make_graph(
            [node],
            node.name or node.op_type,
            [_value_info(n, v) for n, v in zip(names, values)],
            [helper.make_empty_tensor_value_info(n) for n in node.output if n],
        )
        opsets = [helper.make_opsetid("", kwargs.pop("opset_version", onnx.defs.onnx_opset_version()))]
        if node.domain not in ("", "ai.onnx"):
            schema = onnx.defs.get_schema(node.op_type, domain=node.domain)
            opsets.append(helper.make_opsetid(node.domain, schema.since_version))
        model = helper.make_model(graph, opset_imports=opsets)
        return cls.prepare(model, device, **kwargs).run(values)


def _tensor_type(dtype: np.dtype) -> int:
    """The ONNX element type of a numpy dtype; text, bytes and objects are STRING."""
    if dtype.kind in "USO":
        return onnx.TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(dtype)


def _value_info(name: str, value: Any) -> onnx.ValueInfoProto:
    if isinstance(value, list):
        dtype = value[0].dtype if value else np.dtype(np.float32)
        return helper.make_tensor_sequence_value_info(name, _tensor_type(dtype), None)
    return helper.make_tensor_value_info(name, _tensor_type(value.dtype), list(value.shape))


prepare = MetalMpsBackend.prepare
run_model = MetalMpsBackend.run_model
run_node = MetalMpsBackend.run_node
supports_device = MetalMpsBackend.supports_device
is_compatible = MetalMpsBackend.is_compatible
