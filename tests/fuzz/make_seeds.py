"""Builds what `make fuzz` needs: the echo model (one input per protocol dtype, any shape) and a seed
corpus of valid requests of every dtype, packed and unpacked, with output filters and odd encodings, in
DeepRec's format and in TF Serving's (tf.make_tensor_proto's tensor_content and the typed fields).

    python tests/fuzz/make_seeds.py OUT_DIR      # writes OUT_DIR/model and OUT_DIR/seeds
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from model_builders import build_echo_model  # noqa: E402
from test_codec import arrays_of_shape, build_request  # noqa: E402
from wire_helpers import key, length_delimited, request_from_arrays, unpacked_array, varint  # noqa: E402


def seeds():
    for shape in [(4,), (2, 2), (1, 3, 1), (), (0,)]:
        request = build_request(arrays_of_shape(shape))
        yield request.SerializeToString()
        yield request_from_arrays((name, unpacked_array(array)) for name, array in request.inputs.items())
        for alias in request.inputs:  # one dtype alone, so mutations reach each decoder
            single = type(request)()
            single.inputs[alias].CopyFrom(request.inputs[alias])
            single.output_filter.append(alias)
            yield single.SerializeToString()
    request = build_request(arrays_of_shape((2,)))
    request.signature_name = "serving_default"
    request.output_filter.extend(["float", "string", "float"])
    yield request.SerializeToString()
    yield b""  # the signature request
    yield request_from_arrays([("int64", key(1, 0) + varint(9) + length_delimited(7, varint(2**63) * 3))])
    yield key(9, 0) + varint(1) + request.SerializeToString()  # an unknown field first
    # Runs long enough for the decoder's sixteen-byte paths: two- and one-byte varints, short strings.
    arrays = arrays_of_shape((40,))
    arrays["int64"] = np.arange(200, 240, dtype=np.int64)
    arrays["int32"] = np.arange(40, dtype=np.int32)
    arrays["string"][:] = [b"s" * (i % 17) for i in range(40)]
    yield build_request(arrays).SerializeToString()
    # Two-byte values decoded eight at a time up to a longer varint near the run's end, where fewer
    # than eight values are left to write.
    yield build_request({"int64": np.array(list(range(200, 230)) + [-1], dtype=np.int64)}).SerializeToString()
    # A run long enough to be walked as two chains, with strings of every inline length (0 to 22
    # bytes) and a few longer ones.
    strings = arrays_of_shape((300,))["string"]
    strings[:] = [bytes([97 + i % 26]) * (i % 26) for i in range(300)]
    yield build_request({"string": strings}).SerializeToString()


def tf_serving_seeds():
    """TF Serving PredictRequests (tensorflow-serving-api, tf.make_tensor_proto) of the echo model's inputs."""
    try:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
    except ImportError as e:
        print(f"no TF Serving seeds: {e}")
        return
    for shape in [(4,), (2, 2), (), (0,)]:
        arrays = arrays_of_shape(shape)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "echo"
        for alias, array in arrays.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
        yield request.SerializeToString()
        for alias, array in arrays.items():  # one input alone, in its typed field
            single = predict_pb2.PredictRequest()
            proto = tf.make_tensor_proto(array)
            if array.dtype != object and array.size:
                proto.tensor_content = b""
                field = {"f": "float_val" if array.itemsize == 4 else "double_val", "b": "bool_val"}.get(
                    array.dtype.kind, "int64_val" if array.itemsize == 8 else "int_val")
                proto.ClearField(field)
                getattr(proto, field).extend(array.reshape(-1).tolist())
            single.inputs[alias].CopyFrom(proto)
            single.output_filter.append(alias)
            single.model_spec.version.value = 0
            yield single.SerializeToString()


def main() -> None:
    out = Path(sys.argv[1])
    model = out / "model"
    if not (model / "saved_model.pb").exists():
        build_echo_model(str(model))
    corpus = out / "seeds"
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in (*seeds(), *tf_serving_seeds()):
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
        count += 1
    print(f"{count} seeds in {corpus}, model in {model}")


if __name__ == "__main__":
    main()
