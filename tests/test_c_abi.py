"""The C ABI, called the way a host calls it (ctypes, in a process that already runs Python)."""
from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import processor
from processor import predict_pb2, tensors
from processor.hosts import c_host
from abi import CAbi


@pytest.fixture(scope="module")
def abi():
    return CAbi()


def request_bytes(batch) -> bytes:
    request = predict_pb2.PredictRequest()
    for name, value in batch.items():
        tensors.to_array_proto(np.asarray(value), request.inputs[name])
    return request.SerializeToString()


def test_initialize_process_info_finalize(abi, rec_model, reference, batch):
    handle, state = abi.initialize(rec_model.config())
    assert handle and state == 0
    try:
        code, body = abi.process(handle, request_bytes(batch))
        assert code == 200
        response = predict_pb2.PredictResponse.FromString(body)
        expected = reference.predict(rec_model.prefixes()[-1], batch)
        for name, value in expected.items():
            np.testing.assert_allclose(tensors.from_array_proto(response.outputs[name]), value, atol=1e-5)
        code, info = abi.model_info(handle)
        assert code == 200
        assert predict_pb2.ServingModelInfo.FromString(info).model_path == rec_model.prefixes()[-1]
        code, body = abi.process(handle, b"\x0a")
        assert code == 400 and b"not a valid PredictRequest" in body
    finally:
        abi.finalize(handle)


def test_finalize_while_idle_releases_the_model(abi, rec_model):
    """The process's loaded versions (the metric :processor:loaded_versions, read through another model
    that stays open) go up by one with initialize() and back with finalize()."""
    from lifecycle_helpers import loaded_versions
    gc.collect()
    with processor.Processor(rec_model.config(poll_interval_seconds=0)) as observer:
        baseline = loaded_versions(observer)
        handle, state = abi.initialize(rec_model.config())
        assert state == 0
        assert loaded_versions(observer) == baseline + 1
        assert handle in c_host._live
        abi.finalize(handle)
        gc.collect()
        assert handle not in c_host._live
        assert loaded_versions(observer) == baseline


@pytest.mark.parametrize("config,fragment", [
    (b"{not json", b"not valid JSON"),
    (b'{"checkpoint_dir": "/x"}', b"config field 'savedmodel_dir': is required"),
    (b'{"savedmodel_dir": "/x", "session_num": "two"}', b"config field 'session_num'"),
    (b'{"savedmodel_dir": "/no/such/model", "init_timeout_minutes": 0}', b"no SavedModel in savedmodel_dir '/no/such/model'"),
    (None, b"model_config is NULL"),
])
def test_failed_initialize_returns_null_and_state_minus_one(abi, config, fragment, capfd):
    handle, state = abi.initialize(config)
    assert handle is None and state == -1
    assert fragment in capfd.readouterr().err.encode()


def test_null_handle_and_bad_sizes(abi, rec_model):
    code, body = abi.process(None, b"")
    assert code == 503 and b"model_buf is NULL" in body
    code, body = abi.model_info(None)
    assert code == 503
    abi.finalize(None)  # ignored
    handle, _ = abi.initialize(rec_model.config())
    try:
        import ctypes
        out, size = ctypes.c_void_p(), ctypes.c_int()
        code = abi.lib.process(handle, b"", -5, ctypes.byref(out), ctypes.byref(size))
        assert code == 400 and ctypes.string_at(out.value, size.value) == b"input_size is negative"
        abi.lib.free_buffer(out)
    finally:
        abi.finalize(handle)


def test_python_mirror_of_the_abi(rec_model, batch):
    model, state = processor.initialize("", rec_model.config())
    assert state == 0
    code, body = processor.process(model, request_bytes(batch))
    assert code == 200 and predict_pb2.PredictResponse.FromString(body).outputs["prob"].array_shape.dim == [6]
    code, info = processor.get_serving_model_info(model)
    assert code == 200 and predict_pb2.ServingModelInfo.FromString(info).version_step > 0
    processor.finalize(model)
    assert processor.process(model, b"")[0] == 503
    assert processor.initialize("", '{"savedmodel_dir": 1}') == (None, -1)
    assert processor.process(None, b"")[0] == 503


PUBLIC = {"initialize", "process", "process_as", "get_serving_model_info", "free_buffer", "finalize", "rollback",
          "get_metrics"}
ALLOCATOR = {"malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc",
             "malloc_usable_size"}


def defined_symbols(path: str) -> set:
    out = subprocess.run(["nm", "-D", "--defined-only", path], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_library_exports_the_abi_alone_and_needs_only_libc():
    assert defined_symbols(processor.library_path()) == PUBLIC | {"processor_libversion", "processor_libversion_number"}
    needed = subprocess.run(["readelf", "-d", processor.library_path()], check=True, capture_output=True,
                            text=True).stdout
    assert [line.split("[")[1].rstrip("]") for line in needed.splitlines() if "(NEEDED)" in line] == ["libc.so.6"]


def test_engine_exports_only_c_symbols():
    names = defined_symbols(str(Path(processor.library_path()).with_name("libserving_processor_engine.so")))
    assert PUBLIC | ALLOCATOR <= names
    assert all(n in PUBLIC | ALLOCATOR or n.startswith("processor_control_") for n in names), sorted(names)


def test_include_dir_and_library_path_point_at_installed_files():
    assert os.path.isfile(os.path.join(processor.include_dir(), "processor.h"))
    assert os.path.isabs(processor.library_path()) and os.path.isfile(processor.library_path())


def test_the_version_has_one_source():
    """include/processor.h's PROCESSOR_VERSION is the package's version and what the loaded library
    reports, before initialize() and without loading TensorFlow's engine."""
    import ctypes
    import re
    header = open(os.path.join(processor.include_dir(), "processor.h")).read()
    text = re.search(r'#define PROCESSOR_VERSION "([^"]+)"', header).group(1)
    number = int(re.search(r"#define PROCESSOR_VERSION_NUMBER (\d+)", header).group(1))
    major, minor, patch = map(int, text.split("."))
    assert number == major * 1_000_000 + minor * 1_000 + patch
    assert processor.__version__ == text
    library = ctypes.CDLL(processor.library_path())
    library.processor_libversion.restype = ctypes.c_char_p
    assert library.processor_libversion().decode() == text
    assert library.processor_libversion_number() == number
