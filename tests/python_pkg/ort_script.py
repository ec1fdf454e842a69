"""A script written for onnxruntime: load a model, inspect its inputs, run it, compare.

tests/python_pkg/test_ort_script.py runs this file as it is, and again with only its import line
changed to `import metal_mps as ort`.
"""

import numpy as np
import onnxruntime as ort

NUMPY_OF = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}


def main(model_path, batch=2, seed=0):
    """Runs the model on random inputs; returns (input names, outputs by name, providers)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert "CPUExecutionProvider" in ort.get_available_providers()
    sess = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feed = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in arg.shape]
        dtype = NUMPY_OF[arg.type]
        if np.issubdtype(dtype, np.integer):
            feed[arg.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            feed[arg.name] = rng.standard_normal(shape).astype(dtype)
    meta = sess.get_modelmeta()
    print(f"{model_path}: producer {meta.producer_name!r}, graph {meta.graph_name!r}, "
          f"inputs {[(i.name, i.type, i.shape) for i in sess.get_inputs()]}")
    names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(names, feed)
    first = sess.run([names[0]], feed)[0]
    np.testing.assert_array_equal(first, outputs[0])
    try:
        sess.run(None, {})
    except ValueError as e:
        print("missing inputs:", e)
    else:
        raise AssertionError("running without inputs must fail")
    name = sess.get_inputs()[0].name
    try:
        sess.run(None, {**feed, name: feed[name].astype(np.float64)})
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as e:
        print("wrong dtype:", str(e).splitlines()[0])
    else:
        raise AssertionError("a double input where the model wants float must fail")
    return list(feed), dict(zip(names, outputs)), sess.get_providers()
