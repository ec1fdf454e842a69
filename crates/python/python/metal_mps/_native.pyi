"""Type stubs of the metal_mps extension module (crates/python/src)."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

__version__: str

class MetalMpsError(Exception):
    """Base class of every error metal_mps raises."""

class Fail(MetalMpsError):
    """The engine failed (a value it cannot compute, a device error, memory)."""

class InvalidArgument(MetalMpsError):
    """An input does not match the model (name, dtype, shape), or an argument is invalid."""

class NoSuchFile(MetalMpsError):
    """The model file (or its external data) does not exist."""

class NotImplemented(MetalMpsError):  # noqa: A001 (onnxruntime's name)
    """The model uses an operator, attribute or dtype metal_mps does not implement."""

class InvalidProtobuf(MetalMpsError):
    """The bytes are not a serialized ONNX ModelProto."""

class InvalidGraph(MetalMpsError):
    """The model is inconsistent (a value without a type, an output nothing produces...)."""

class GraphOptimizationLevel:
    """``ORT_DISABLE_ALL`` turns the optimizer off; every other level runs it."""

    ORT_DISABLE_ALL: GraphOptimizationLevel
    ORT_ENABLE_BASIC: GraphOptimizationLevel
    ORT_ENABLE_EXTENDED: GraphOptimizationLevel
    ORT_ENABLE_ALL: GraphOptimizationLevel

class ExecutionMode:
    """Kept for onnxruntime scripts: nodes run in order in both modes."""

    ORT_SEQUENTIAL: ExecutionMode
    ORT_PARALLEL: ExecutionMode

class SessionOptions:
    """How an InferenceSession loads and runs its model.

    ``device`` ("auto", "cpu", "gpu"; used when ``providers`` is not given), ``precision``
    ("fp32", "fp16"), ``max_pool_size`` (bytes) and ``max_buffer_age`` (seconds) of the GPU
    buffer pool, ``adapter`` (part of the GPU adapter's name), ``intra_op_num_threads`` (threads of a
    CPU pool of this session's own; 0: the process-wide pool),
    ``graph_optimization_level`` (``ORT_DISABLE_ALL`` turns the optimizer off). The other
    attributes are kept for onnxruntime scripts and change nothing.
    """

    device: str
    precision: str
    max_pool_size: int | None
    max_buffer_age: float | None
    adapter: str | None
    intra_op_num_threads: int
    inter_op_num_threads: int
    graph_optimization_level: GraphOptimizationLevel
    execution_mode: ExecutionMode
    log_severity_level: int
    log_verbosity_level: int
    enable_cpu_mem_arena: bool
    enable_mem_pattern: bool
    enable_profiling: bool
    def __init__(self) -> None: ...
    def add_session_config_entry(self, key: str, value: str) -> None: ...
    def get_session_config_entry(self, key: str) -> str: ...

class RunOptions:
    """Kept for onnxruntime scripts: nothing in it changes a run."""

    log_severity_level: int
    log_verbosity_level: int
    logid: str
    run_tag: str
    def __init__(self) -> None: ...

class NodeArg:
    """A model input or output: ``shape`` holds ints (fixed), strings (symbolic) and None (unknown)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str:
        """As onnxruntime spells it: ``"tensor(float)"``, ``"tensor(string)"``,
        ``"seq(tensor(float))"``, ``"optional(tensor(int64))"``, ..."""
    @property
    def shape(self) -> list[int | str | None]: ...

class ModelMetadata:
    """What the model file says about itself."""

    @property
    def producer_name(self) -> str: ...
    @property
    def producer_version(self) -> str: ...
    @property
    def graph_name(self) -> str: ...
    @property
    def graph_description(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def custom_metadata_map(self) -> dict[str, str]: ...

Provider = Union[str, tuple[str, Mapping[str, Any]]]

class InferenceSession:
    """Loads an ONNX model once and runs it, from any number of Python threads at once.

    ``providers``: ``["MetalMpsExecutionProvider", "CPUExecutionProvider"]`` or part of it; the
    first names the engine (default: ``sess_options.device``).
    """

    def __init__(
        self,
        path_or_bytes: str | bytes | os.PathLike[str],
        sess_options: SessionOptions | None = None,
        providers: Sequence[Provider] | None = None,
        provider_options: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None: ...
    def get_inputs(self) -> list[NodeArg]: ...
    def get_outputs(self) -> list[NodeArg]: ...
    def get_overridable_initializers(self) -> list[NodeArg]: ...
    def get_modelmeta(self) -> ModelMetadata: ...
    def get_providers(self) -> list[str]: ...
    def get_session_options(self) -> SessionOptions: ...
    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, Any],
        run_options: RunOptions | None = None,
    ) -> list[Any]:
        """Runs the model (the GIL released meanwhile); ``output_names`` None or empty: all outputs.

        A tensor input is a numpy array (or anything ``numpy.asarray`` takes); C-contiguous
        inputs are read in place, without a copy. A STRING input is an array of dtype kind
        ``'U'`` (text, sent as UTF-8), ``'S'`` (bytes) or ``'O'`` holding only ``str``/``bytes``.
        int4/uint4/int2/uint2 inputs and outputs use the ``ml_dtypes`` dtypes (as
        ``onnx.numpy_helper`` does). A sequence input is a list of arrays; an optional input is
        ``None`` (no value; also when left out of the feed) or its value.

        Returns one item per output: a numpy array for a tensor (STRING: an object array of
        ``str``, ``bytes`` for an element that is not UTF-8), a list of arrays for a sequence,
        ``None`` or the value for an optional. A value of the wrong kind (a list for a tensor,
        a ragged list, an object array holding numbers) raises ``InvalidArgument``."""
    def run_async(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, Any],
        callback: Callable[[list[Any], Any, str], None],
        user_data: Any,
        run_options: RunOptions | None = None,
    ) -> None:
        """Starts a run on another thread; ``callback(outputs, user_data, error)`` follows
        (``error`` is ``""`` on success, the outputs empty on failure)."""

def get_available_providers() -> list[str]: ...
def get_all_providers() -> list[str]: ...
def get_device() -> str: ...
