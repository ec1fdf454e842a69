"""Bad requests fail alone; broken models are unavailable with our message; panics
become errors; the server keeps serving throughout."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import assert_close, image, infer_grpc, infer_http
from tritonclient.utils import InferenceServerException


def still_serving(http, reference):
    x = image(seed=42)
    assert_close(infer_http(http, "simple_cnn", x).as_numpy("output"), reference("simple_cnn", x))


def expect_http_error(fn, status: str, *fragments: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        fn()
    message = str(info.value)
    assert info.value.status() == status, message
    for f in fragments:
        assert f in message, message
    return message


BAD_REQUESTS = {
    "wrong dtype": (lambda c: infer_http(c, "simple_cnn", np.zeros((1, 3, 224, 224), np.float64), dtype="FP64"),
                    ["data-type is 'FP64'", "expects 'FP32'"]),
    "wrong shape": (lambda c: infer_http(c, "simple_cnn", np.zeros((1, 3, 224, 225), np.float32)),
                    ["unexpected shape for input 'input'", "[1,3,224,225]"]),
    "too large a batch": (lambda c: infer_http(c, "simple_cnn", np.zeros((9, 3, 224, 224), np.float32)),
                          ["batch-size must be <= 8"]),
    "missing input": (lambda c: c.infer("simple_cnn", []), ["expected 1 inputs but got 0"]),
    "unknown output": (lambda c: infer_http(c, "simple_cnn", image(), outputs=["logits"]),
                       ["unexpected inference output 'logits'"]),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_is_400_and_the_next_is_served(case, load, http, reference):
    load("simple_cnn")
    send, fragments = BAD_REQUESTS[case]
    expect_http_error(lambda: send(http), "400", *fragments)
    still_serving(http, reference)


def test_bad_request_over_grpc_is_invalid_argument(load, grpc, http, reference):
    load("simple_cnn")
    inp = grpcclient.InferInput("input", [1, 3, 224, 225], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 224, 225), np.float32))
    with pytest.raises(InferenceServerException) as info:
        grpc.infer("simple_cnn", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", str(info.value)
    assert_close(infer_grpc(grpc, "simple_cnn", image(seed=1)).as_numpy("output"),
                 reference("simple_cnn", image(seed=1)))


def test_mixed_batch_answers_good_requests(load, http, reference):
    """A bad request queued beside good ones in the dynamic batcher fails alone."""
    load("batched_cnn")
    good = [image(seed=500 + i) for i in range(3)]
    pending = []
    for i, x in enumerate(good + [np.zeros((1, 3, 224, 200), np.float32)]):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        pending.append(http.async_infer("batched_cnn", [inp]))
    results = []
    for p in pending:
        try:
            results.append(p.get_result().as_numpy("output"))
        except InferenceServerException as e:
            results.append(e)
    for x, y in zip(good, results[:3]):
        assert_close(y, reference("simple_cnn", x))
    assert isinstance(results[3], InferenceServerException) and results[3].status() == "400"


UNLOADABLE = {
    "corrupt": ["failed to load", "corrupt/1/model.onnx", "invalid model"],
    "unsupported_op": ["failed to load", "unsupported", "'Frobnicate'", "'com.example.custom'"],
    "bad_dims": ["model configuration field 'input[0].dims'", "dimension 2 is 225 in the configuration but 224 in the model"],
    "bad_param": ["model configuration field 'parameters.precision'", "'int4'"],
    "panic_init": ["TRITONBACKEND_ModelInitialize panicked", "fault injection"],
    # Triton's own check, before the backend is called (why the README says KIND_MODEL).
    "kind_gpu": ["KIND_GPU", "no GPUs are available"],
}


@pytest.mark.parametrize("name", UNLOADABLE)
def test_broken_model_is_unavailable_with_our_message(name, http, load, reference):
    load("simple_cnn")
    expect_http_error(lambda: http.load_model(name), "400", *UNLOADABLE[name])
    index = {m["name"]: m for m in http.get_model_repository_index()}
    assert index[name]["state"] == "UNAVAILABLE"
    assert UNLOADABLE[name][0] in index[name]["reason"], index[name]
    assert not http.is_model_ready(name)
    still_serving(http, reference)


def test_panic_in_execute_is_an_internal_error_and_the_server_keeps_serving(load, http, grpc, reference):
    load("panic_execute")
    for _ in range(2):
        expect_http_error(lambda: infer_http(http, "panic_execute", image()), "500",
                          "TRITONBACKEND_ModelInstanceExecute", "panicked", "fault injection")
    with pytest.raises(InferenceServerException) as info:
        infer_grpc(grpc, "panic_execute", image())
    assert "panicked" in str(info.value)
    still_serving(http, reference)
