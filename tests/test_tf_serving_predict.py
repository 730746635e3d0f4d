"""TF Serving's PredictRequest served by the engine (process_as with PROCESSOR_FORMAT_TF_SERVING_PREDICT):
requests made by TF Serving's own client library (tensorflow-serving-api's predict_pb2, with
tf.make_tensor_proto as its examples use it, and TensorProtos filled field by field as Go and Java
clients fill them), answers read with tf.make_ndarray and compared with TensorFlow's own."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import processor
from abi import CAbi
from model_builders import save_predict_signature
from processor.server.registry import served_version

tf = pytest.importorskip("tensorflow")
predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")

ROOT = Path(__file__).resolve().parents[1]
TFS = processor.FORMAT_TF_SERVING_PREDICT

# alias -> (tf dtype, sample values): every dtype a TensorProto carries here.
DTYPES = {
    "float": (tf.float32, [1.5, -2.25, 3.0e38, 0.0]),
    "double": (tf.float64, [1e-300, -2.5, 3.25, 1e300]),
    "int32": (tf.int32, [-2**31, 2**31 - 1, 0, -1]),
    "uint8": (tf.uint8, [0, 255, 7, 128]),
    "int16": (tf.int16, [-32768, 32767, -1, 0]),
    "int8": (tf.int8, [-128, 127, -1, 5]),
    "uint16": (tf.uint16, [0, 65535, 1, 40000]),
    "int64": (tf.int64, [-2**63, 2**63 - 1, -1, 1234567890123]),
    "uint32": (tf.uint32, [0, 2**32 - 1, 1, 3000000000]),
    "uint64": (tf.uint64, [0, 2**64 - 1, 1, 2**63 + 5]),
    "bool": (tf.bool, [True, False, True, True]),
    "half": (tf.float16, [1.5, -2.0, 65504.0, 0.0009765625]),
    "bfloat16": (tf.bfloat16, [1.5, -2.0, 3.0e38, 0.0078125]),
    "string": (tf.string, [b"", b"hello", "\u00e9t\u00e9".encode(), bytes(range(256))]),
}


def array(alias: str, shape=(2, 2)) -> np.ndarray:
    dtype, values = DTYPES[alias]
    return np.array(values, dtype=dtype.as_numpy_dtype if dtype != tf.string else object).reshape(shape)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """A SavedModel (TF1 builder) returning each input unchanged, one input per dtype, any shape."""
    tf1 = tf.compat.v1
    path = str(tmp_path_factory.mktemp("tfs_echo") / "saved_model")
    with tf.Graph().as_default() as graph:
        inputs, outputs = {}, {}
        for alias, (dtype, _) in DTYPES.items():
            inputs[alias] = tf1.placeholder(dtype, shape=None, name=f"in_{alias}")
            outputs[alias] = tf.identity(inputs[alias], name=f"out_{alias}")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, inputs, outputs)
    with processor.Processor({"savedmodel_dir": path}) as p:
        yield p


def request(inputs: dict, name: str = "echo", output_filter=(), signature_name: str = "", version=None,
            label: str = "", complete: bool = True) -> predict_pb2.PredictRequest:
    """A PredictRequest of `inputs` (arrays or TensorProtos); `complete` adds the echo model's other
    inputs (its signature needs them all, as TF Serving's does)."""
    if complete and set(inputs) <= set(DTYPES):
        inputs = {**{alias: array(alias) for alias in DTYPES}, **inputs}
    r = predict_pb2.PredictRequest()
    r.model_spec.name = name
    if signature_name:
        r.model_spec.signature_name = signature_name
    if version is not None:
        r.model_spec.version.value = version
    if label:
        r.model_spec.version_label = label
    for alias, value in inputs.items():
        r.inputs[alias].CopyFrom(value if isinstance(value, tf.make_tensor_proto(0).__class__)
                                 else tf.make_tensor_proto(value))
    r.output_filter.extend(output_filter)
    return r


def predict(p, r) -> predict_pb2.PredictResponse:
    code, body = p.process(r.SerializeToString(), TFS)
    assert code == 200, body
    return predict_pb2.PredictResponse.FromString(body)


def error(p, r) -> tuple:
    code, body = p.process(r if isinstance(r, bytes) else r.SerializeToString(), TFS)
    assert code != 200
    return code, body.decode()


@pytest.mark.parametrize("alias", list(DTYPES))
def test_every_dtype_from_make_tensor_proto_comes_back_as_tf_serving_writes_it(echo, alias):
    sent = array(alias)
    response = predict(echo, request({alias: sent}, output_filter=[alias]))
    tensor = response.outputs[alias]
    got = tf.make_ndarray(tensor)
    assert got.dtype == sent.dtype and got.shape == sent.shape
    if alias == "string":
        assert got.tolist() == sent.tolist()
    else:
        np.testing.assert_array_equal(got.view(np.uint8), sent.view(np.uint8))  # bit for bit
    # As Tensor::AsProtoField writes it: the dtype's own field, no tensor_content, dims with sizes.
    assert tensor.dtype == DTYPES[alias][0].as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 2]
    assert tensor.tensor_content == b""
    field = {"float": "float_val", "double": "double_val", "int64": "int64_val", "bool": "bool_val",
             "string": "string_val", "half": "half_val", "bfloat16": "half_val", "uint32": "uint32_val",
             "uint64": "uint64_val"}.get(alias, "int_val")
    assert len(getattr(tensor, field)) == 4
    assert list(response.outputs) == [alias]


@pytest.mark.parametrize("alias", [a for a in DTYPES if a != "string"])
def test_every_dtype_in_its_value_field_as_go_and_java_clients_send_it(echo, alias):
    sent = array(alias, shape=(4,))
    proto = tf.make_tensor_proto(sent)
    field = {"float": "float_val", "double": "double_val", "int64": "int64_val", "bool": "bool_val",
             "half": "half_val", "bfloat16": "half_val", "uint32": "uint32_val",
             "uint64": "uint64_val"}.get(alias, "int_val")
    proto.tensor_content = b""
    proto.ClearField(field)  # make_tensor_proto writes some dtypes (uint16) there already
    if field == "half_val":
        getattr(proto, field).extend(int(v) for v in sent.view(np.uint16))
    else:
        getattr(proto, field).extend(sent.tolist())
    got = tf.make_ndarray(predict(echo, request({alias: proto}, output_filter=[alias])).outputs[alias])
    np.testing.assert_array_equal(got.view(np.uint8), sent.view(np.uint8))


def test_fewer_values_than_the_shape_are_filled_as_tensorflow_fills_them(echo):
    # tf.make_tensor_proto(7.0, shape=[2, 3]) sends one value for six: TensorFlow repeats the last.
    cases = {
        "float": tf.make_tensor_proto(7.0, shape=[2, 3]),
        "string": tf.make_tensor_proto([b"a", b"b"], shape=[3]),
    }
    partial = tf.make_tensor_proto(np.array([1, 2], np.int64), shape=[2])
    partial.tensor_content = b""
    partial.int64_val.extend([1, 2])
    partial.tensor_shape.dim[0].size = 5
    cases["int64"] = partial
    empty = tf.make_tensor_proto(np.zeros([0], np.int32))
    empty.tensor_shape.dim[0].size = 3  # no values at all: zeros
    cases["int32"] = empty
    response = predict(echo, request(cases, output_filter=list(cases)))
    for alias, proto in cases.items():
        expected = tf.make_ndarray(proto)  # TensorFlow's own reading of the same TensorProto
        got = tf.make_ndarray(response.outputs[alias])
        assert got.tolist() == expected.tolist(), alias
    assert tf.make_ndarray(response.outputs["float"]).tolist() == [[7.0] * 3] * 2
    assert tf.make_ndarray(response.outputs["int64"]).tolist() == [1, 2, 2, 2, 2]
    assert tf.make_ndarray(response.outputs["int32"]).tolist() == [0, 0, 0]


def test_the_response_names_model_version_and_signature(echo):
    response = predict(echo, request({"float": array("float")}, name="my_model", output_filter=["float"]))
    assert response.model_spec.name == "my_model"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.HasField("version") and response.model_spec.version.value == 0
    assert response.model_spec.WhichOneof("version_choice") == "version"


def test_a_request_naming_the_served_signature_is_served(echo):
    response = predict(echo, request({"int8": array("int8")}, signature_name="serving_default", output_filter=["int8"]))
    assert tf.make_ndarray(response.outputs["int8"]).tolist() == array("int8").tolist()


@pytest.mark.parametrize("case, message", [
    ("unknown_signature", 'Serving signature key "classify" not found.'),
    ("unknown_input", "input tensor alias not found in signature: nope. Inputs expected to be in the set {bfloat16,"),
    ("unknown_output", "output tensor alias not found in signature: nope Outputs expected to be in the set {"),
    ("duplicate_output", "duplicate output tensor alias: float"),
    ("too_many_values", "shape [2] holds 2 values but 3 were sent in float_val"),
    ("content_size", "tensor_content holds 12 bytes but shape [2] of DT_FLOAT needs 8"),
    ("wrong_field", "DT_FLOAT values belong in float_val, but double_val is set"),
    ("out_of_range", "value 300 is out of range"),
    ("string_content", "DT_STRING values belong in string_val, not tensor_content"),
    ("no_dtype", "input 'float': dtype DT_INVALID does not match the signature's DT_FLOAT"),
    ("complex", "input 'float': dtype DT_COMPLEX64 does not match the signature's DT_FLOAT"),
    ("negative_dim", "negative dimension -1 in tensor_shape"),
    ("unknown_rank", "tensor_shape has unknown_rank set"),
    ("malformed", "the request is not a valid PredictRequest (malformed protocol buffer)"),
])
def test_bad_requests_answer_400_with_a_message_and_the_model_keeps_serving(echo, case, message):
    floats = tf.make_tensor_proto(np.array([1, 2], np.float32))
    r = request({"float": floats}, output_filter=["float"])
    if case == "unknown_signature":
        r.model_spec.signature_name = "classify"
    elif case == "unknown_input":
        r.inputs["nope"].CopyFrom(floats)  # one more than the signature's
    elif case == "unknown_output":
        r.output_filter.append("nope")
    elif case == "duplicate_output":
        r.output_filter.append("float")
    elif case == "too_many_values":
        r.inputs["float"].tensor_content = b""
        r.inputs["float"].float_val.extend([1, 2, 3])
    elif case == "content_size":
        r.inputs["float"].tensor_content = np.array([1, 2, 3], np.float32).tobytes()
    elif case == "wrong_field":
        r.inputs["float"].tensor_content = b""
        r.inputs["float"].double_val.extend([1, 2])
    elif case == "out_of_range":
        u8 = tf.make_tensor_proto(np.array([1], np.uint8))
        u8.tensor_content = b""
        u8.ClearField("int_val")
        u8.int_val.append(300)
        r.inputs["uint8"].CopyFrom(u8)
    elif case == "string_content":
        r.inputs["string"].CopyFrom(tf.make_tensor_proto([b"a"]))
        r.inputs["string"].tensor_content = b"abc"
    elif case == "no_dtype":
        r.inputs["float"].dtype = 0
    elif case == "complex":
        r.inputs["float"].CopyFrom(tf.make_tensor_proto(np.array([1j], np.complex64)))
    elif case == "negative_dim":
        r.inputs["float"].tensor_shape.dim[0].size = -1
    elif case == "unknown_rank":
        r.inputs["float"].tensor_shape.unknown_rank = True
    data = r.SerializeToString() if case != "malformed" else b"\x0a\xff\xff"
    code, text = error(echo, data)
    assert code == 400, text
    assert message in text
    assert predict(echo, request({"float": floats}, output_filter=["float"])).outputs["float"].float_val == [1, 2]


def test_the_signature_dtype_is_a_contract(echo):
    code, text = error(echo, request({"float": np.array([1, 2], np.float64)}, output_filter=["float"]))
    assert code == 400 and text == "input 'float': dtype DT_DOUBLE does not match the signature's DT_FLOAT"


def test_a_real_model_answers_as_tensorflow_and_as_the_deeprec_format(rec_model, reference, batch):
    with processor.Processor(rec_model.config()) as p:
        response = predict(p, request(batch, name="rec", complete=False))
        expected = reference.predict(rec_model.prefixes()[-1], batch)
        deeprec = p.predict(batch)
        for name, value in expected.items():
            got = tf.make_ndarray(response.outputs[name])
            np.testing.assert_allclose(got, value, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(got, deeprec[name])  # one engine: the same bits either way
        assert p.model_info().version_step > 0
        assert response.model_spec.version.value == served_version(p)  # the REST API's number, one rule


def test_through_the_c_abi_and_the_header_constants(rec_model, batch):
    header = (ROOT / "include" / "processor.h").read_text()
    constants = dict(re.findall(r"(PROCESSOR_FORMAT_\w+) = (\d+)", header))
    assert constants == {"PROCESSOR_FORMAT_DEEPREC": str(processor.FORMAT_DEEPREC),
                         "PROCESSOR_FORMAT_TF_SERVING_PREDICT": str(processor.FORMAT_TF_SERVING_PREDICT)}
    abi = CAbi()
    handle, state = abi.initialize(rec_model.config())
    assert state == 0
    try:
        code, body = abi.process_as(handle, TFS, request(batch, name="rec", output_filter=["prob"], complete=False).SerializeToString())
        assert code == 200, body
        prob = tf.make_ndarray(predict_pb2.PredictResponse.FromString(body).outputs["prob"])
        assert prob.shape == (len(batch["user_id"]),)
        code, body = abi.process_as(handle, 7, b"")
        assert (code, body) == (400, b"unknown request format 7")
    finally:
        abi.finalize(handle)


def test_a_request_naming_a_version_is_answered_by_that_version_alone(echo):
    # The echo model is an unversioned SavedModel: its version is 0, as the REST API reports it.
    response = predict(echo, request({"int8": array("int8")}, output_filter=["int8"], version=0))
    assert response.model_spec.version.value == 0
    code, text = error(echo, request({"int8": array("int8")}, version=5))
    assert (code, text) == (404, "Servable not found for request: Specific(echo, 5)")
    # a label is the host's to resolve (the engine serves what the host routed to it)
    assert predict(echo, request({"int8": array("int8")}, output_filter=["int8"], label="stable")).outputs["int8"]


def test_predict_naming_a_version_is_answered_by_that_version_alone(rec_model, batch):
    """Processor.predict(version=V), which REST and the APIs answered in Python use: the engine checks
    the number with the run (a model swapping in place cannot answer from another version)."""
    with processor.Processor(rec_model.config(poll_interval_seconds=0, model_name="rec")) as p:
        step = served_version(p)
        assert step == int(rec_model.prefixes()[-1].rsplit("-", 1)[1])  # the checkpoint's step
        assert p.predict(batch, version=step)["prob"].shape == (6,)
        with pytest.raises(processor.RequestError) as raised:
            p.predict(batch, version=step - 1)
        assert (raised.value.code, raised.value.message) == (
            404, f"Servable not found for request: Specific(rec, {step - 1})")


def test_names_from_the_request_are_escaped_in_messages(echo):
    """TF Serving's messages quote request names raw; here they keep its wording, but a control byte is
    escaped, so that the message stays one NUL-terminated UTF-8 string (the C ABI's promise; the fuzzer
    found a name with a NUL cutting a message short)."""
    code, text = error(echo, request({"a\x00b": np.array([1.0], np.float32)}))
    assert code == 400
    assert text.startswith("input tensor alias not found in signature: a\\x00b. Inputs expected to be in the set {")


def test_an_output_its_format_cannot_carry_is_an_error_naming_it_and_the_model_keeps_serving(tmp_path):
    """A half output travels in TF Serving's half_val but has no field in DeepRec's ArrayProto; a
    complex64 one has none in either (TF Serving's scomplex_val is not written here)."""
    tf1 = tf.compat.v1
    path = str(tmp_path / "model")
    with tf.Graph().as_default() as graph:
        x = tf1.placeholder(tf.float32, [None], name="x")
        outputs = {"half": tf.cast(x, tf.float16), "complex": tf.complex(x, x), "y": tf.identity(x)}
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, {"x": x}, outputs)
    x = np.array([1.5, -2.0], np.float32)
    with processor.Processor({"savedmodel_dir": path}) as p:
        r = request({"x": x}, name="m", output_filter=["half", "y"])
        response = predict(p, r)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["half"]), x.astype(np.float16))
        assert error(p, request({"x": x}, name="m")) == \
            (500, "output 'complex': a TensorProto cannot carry dtype DT_COMPLEX64 (8)")
        with pytest.raises(processor.ProcessorError, match=r"^500: output 'half': an ArrayProto cannot carry dtype "
                                                          r"DT_HALF \(19\)$") as e:
            p.predict({"x": x}, output_filter=["half"])
        assert e.value.code == 500
        np.testing.assert_array_equal(p.predict({"x": x}, output_filter=["y"])["y"], x)
