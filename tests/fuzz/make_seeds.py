"""Builds what `make fuzz` needs: the echo model (one input per protocol dtype, any shape) and a seed
corpus of valid requests of every dtype, packed and unpacked, with output filters and odd encodings.

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


def main() -> None:
    out = Path(sys.argv[1])
    model = out / "model"
    if not (model / "saved_model.pb").exists():
        build_echo_model(str(model))
    corpus = out / "seeds"
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in seeds():
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
        count += 1
    print(f"{count} seeds in {corpus}, model in {model}")


if __name__ == "__main__":
    main()
