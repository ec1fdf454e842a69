"""Triton Python-backend model running an ONNX model with onnxruntime: the comparator
of scripts/triton/bench.py. Installed as `<model>/1/model.py` beside `1/model.onnx`.

Like the metal_mps backend, it runs all requests of one execute call as one batch.
"""

import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        y = self.session.run(None, {self.input: np.concatenate(xs)})[0]
        responses, start = [], 0
        for x in xs:
            n = x.shape[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, y[start:start + n])]))
            start += n
        return responses
