"""The library inside C++ hosts that link their own protobuf and malloc (tests/native/embed_host.cc).

Each host is built here from Debian's packages (libprotobuf-dev, protobuf-compiler, libjemalloc-dev,
libgoogle-perftools-dev; .ci/run installs them) with its own classes generated from protos/predict.proto,
runs under `env -i`, and frees every buffer the library returns with its own free().
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import processor
from lifecycle_helpers import serialize
from processor import predict_pb2, tensors

ROOT = Path(__file__).resolve().parents[1]
ALLOCATORS = {"system": [], "jemalloc": ["-ljemalloc"], "tcmalloc": ["-ltcmalloc"]}


def allocator_installed(name: str) -> bool:
    return any(Path("/usr/lib").glob(f"*/lib{name}.so"))


def missing_system_parts():
    missing = [tool for tool in ("protoc", "g++") if not shutil.which(tool)]
    if not Path("/usr/include/google/protobuf/message.h").exists():
        missing.append("libprotobuf-dev")
    return missing


@pytest.fixture(scope="module")
def host_builder(tmp_path_factory):
    missing = missing_system_parts()
    if missing:
        pytest.skip(f"cannot build a C++ protobuf host without {', '.join(missing)} (.ci/run installs them)")
    work = tmp_path_factory.mktemp("embed_host")
    # The host's own generated classes, from the system's protoc (3.21 on Debian 12, not TensorFlow's).
    subprocess.run(["protoc", f"-I{ROOT / 'protos'}", f"--cpp_out={work}", str(ROOT / "protos" / "predict.proto")],
                   check=True)
    built = {}

    def build(allocator: str = "system", linked: bool = False) -> str:
        key = (allocator, linked)
        if key not in built:
            library = [f"-L{Path(processor.library_path()).parent}", "-lserving_processor",
                       f"-Wl,-rpath,{Path(processor.library_path()).parent}"] if linked else []
            binary = work / f"embed_host-{allocator}{'-linked' if linked else ''}"
            subprocess.run(["g++", "-std=c++17", "-O1", "-g", "-Wall", "-Werror", f"-I{work}",
                            f"-I{processor.include_dir()}", *(["-DEMBED_HOST_LINKED"] if linked else []),
                            "-o", str(binary), str(ROOT / "tests" / "native" / "embed_host.cc"),
                            str(work / "predict.pb.cc"), *library, "-lprotobuf", *ALLOCATORS[allocator],
                            "-ldl", "-pthread"], check=True)
            built[key] = str(binary)
        return built[key]

    return build


def run_host(binary, mode, library, config: dict, batch, out_dir: Path, threads=2, seconds=1.0, during=None):
    """Runs the host (under env -i); `during` runs once it serves. Returns (summary, distinct answers, stderr)."""
    out_dir.mkdir()
    (out_dir / "config.json").write_text(json.dumps(config))
    (out_dir / "request.bin").write_bytes(serialize(batch))
    host = subprocess.Popen(["env", "-i", binary, mode, library, str(out_dir / "config.json"),
                             str(out_dir / "request.bin"), str(out_dir), str(threads), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = host.stdout.readline()
    if during and first == "initialized\n":
        during()
    stdout, stderr = host.communicate(timeout=300)
    stdout = first + stdout
    assert host.returncode == 0, f"exit {host.returncode}\n{stdout}\n{stderr[-3000:]}"
    summary = json.loads(stdout.strip().splitlines()[-1])
    answers = [predict_pb2.PredictResponse.FromString(p.read_bytes()) for p in sorted(out_dir.glob("answer-*.bin"))]
    return summary, answers, stderr


def assert_answers_match(answers, expected_by_version):
    """Every answer equals TensorFlow's outputs for one of the versions; returns the versions seen."""
    seen = set()
    for answer in answers:
        matches = [version for version, expected in expected_by_version.items()
                   if all(np.allclose(tensors.from_array_proto(answer.outputs[name]), value, atol=1e-5)
                          for name, value in expected.items())]
        assert matches, "an answer equals no version's TensorFlow outputs"
        seen.update(matches)
    return seen


@pytest.mark.parametrize("mode", ["now", "local", "global", "lazy", "linked"])
def test_host_with_its_own_protobuf_loads_the_library_with_any_flags(host_builder, mode, rec_model, reference,
                                                                     batch, tmp_path):
    binary = host_builder(linked=mode == "linked")
    summary, answers, stderr = run_host(binary, mode, processor.library_path(), rec_model.config(), batch,
                                        tmp_path / "out")
    assert summary["failed"] == 0, summary
    assert summary["ok"] > 0 and summary["bad_request_code"] == 400
    assert len(answers) == 1
    newest = rec_model.prefixes()[-1]
    assert assert_answers_match(answers, {newest: reference.predict(newest, batch)}) == {newest}
    assert "RTLD_DEEPBIND: isolated from the host's libraries" in stderr


def test_the_engine_loaded_directly_crashes_such_a_host(host_builder, rec_model, batch, tmp_path):
    """Why the shim exists: TensorFlow's libraries bound to the host's libprotobuf crash inside dlopen()."""
    engine = str(Path(processor.library_path()).with_name("libserving_processor_engine.so"))
    (tmp_path / "config.json").write_text(json.dumps(rec_model.config()))
    (tmp_path / "request.bin").write_bytes(serialize(batch))
    result = subprocess.run(["env", "-i", host_builder(), "now", engine, str(tmp_path / "config.json"),
                             str(tmp_path / "request.bin"), str(tmp_path), "1", "0.1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -11, (result.returncode, result.stdout, result.stderr[-2000:])  # SIGSEGV


@pytest.mark.parametrize("allocator", ["jemalloc", "tcmalloc"])
def test_host_with_a_malloc_replacement_serves_while_versions_swap(host_builder, allocator, rec_model, reference,
                                                                  batch, tmp_path):
    if not allocator_installed(allocator):
        pytest.skip(f"lib{allocator}.so is not installed (.ci/run installs libjemalloc-dev and libgoogle-perftools-dev)")
    model = rec_model.copy(tmp_path / "model")
    expected = {model.prefixes()[-1]: reference.predict(model.prefixes()[-1], batch)}

    def publish_versions():
        for seed in range(3):
            model.trainer.train(3, seed=100 + seed)
            prefix = model.trainer.save_checkpoint(model.checkpoint_dir)
            expected[prefix] = reference.predict(prefix, batch)
            time.sleep(1.0)

    summary, answers, stderr = run_host(host_builder(allocator), "local", processor.library_path(),
                                        model.config(poll_interval_seconds=0.1), batch, tmp_path / "out",
                                        threads=4, seconds=9.0, during=publish_versions)
    assert summary["failed"] == 0, summary
    assert summary["bad_request_code"] == 400
    seen = assert_answers_match(answers, expected)
    assert model.prefixes()[-1] in seen, "the newest version was never served"
    assert len(seen) >= 2, "no swap happened under load"


def test_jemalloc_host_serves_embeddings_from_redis(host_builder, rec_model, reference, batch, tmp_path):
    """hiredis strdup()s through libc (the host's jemalloc) and free()s through the engine: one heap."""
    if not allocator_installed("jemalloc"):
        pytest.skip("libjemalloc.so is not installed (.ci/run installs libjemalloc-dev)")
    from redis_servers import RedisServer
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path / "redis", password="embed-pass")
    try:
        summary, answers, stderr = run_host(
            host_builder("jemalloc"), "now", processor.library_path(),
            rec_model.config(feature_store_type="redis", redis_url=server.address, redis_password="embed-pass",
                             poll_interval_seconds=0), batch, tmp_path / "out", threads=3, seconds=1.0)
    finally:
        server.stop()
    assert summary["failed"] == 0 and summary["ok"] > 0, summary
    newest = rec_model.prefixes()[-1]
    assert assert_answers_match(answers, {newest: reference.predict(newest, batch)}) == {newest}
    assert "embed-pass" not in json.dumps(summary) + stderr


PYTHON_HOST = r"""
import json, sys
import grpc, google.protobuf, tensorflow as tf   # each with its own protobuf, imported first
sys.path.insert(0, sys.argv[3])
import processor
from abi import CAbi
from processor import predict_pb2, tensors
config, request = json.loads(sys.argv[1]), open(sys.argv[2], "rb").read()
prob = lambda answer: tensors.from_array_proto(predict_pb2.PredictResponse.FromString(answer).outputs["prob"]).tolist()
with processor.Processor(config) as p:
    direct_code, direct = p.process(request)
abi = CAbi()                                       # the shim, through ctypes, in the same process
handle, state = abi.initialize(config)
code, answer = abi.process(handle, request)
abi.finalize(handle)
print(json.dumps({"state": state, "codes": [direct_code, code], "direct": prob(direct), "abi": prob(answer)}))
"""


def test_python_process_with_tensorflow_and_grpc_imported_first(rec_model, reference, batch, tmp_path):
    """`import processor` and the C ABI through ctypes, after grpc, protobuf and tensorflow."""
    pytest.importorskip("grpc", reason="grpcio is not installed (requirements.txt lists it)")
    import sys
    (tmp_path / "request.bin").write_bytes(serialize(batch))
    result = subprocess.run([sys.executable, "-c", PYTHON_HOST, json.dumps(rec_model.config(poll_interval_seconds=0)),
                             str(tmp_path / "request.bin"), str(ROOT / "tests")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == 0 and summary["codes"] == [200, 200]
    expected = reference.predict(rec_model.prefixes()[-1], batch)["prob"]
    np.testing.assert_allclose(summary["direct"], expected, atol=1e-5)
    np.testing.assert_allclose(summary["abi"], expected, atol=1e-5)


NO_HANDLE_CALLS = r"""
import ctypes, json, sys
def calls(path):
    lib = ctypes.CDLL(path)
    out, size = ctypes.c_void_p(), ctypes.c_int()
    answers = []
    for name in ("process", "get_serving_model_info", "get_metrics"):
        args = (None, b"x", 1) if name == "process" else (None,)
        code = getattr(lib, name)(*args, ctypes.byref(out), ctypes.byref(size))
        answers.append([code, ctypes.string_at(out.value, size.value).decode()])
        lib.free_buffer(out)
    lib.rollback.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
    answers.append([lib.rollback(None, -1), ""])
    lib.finalize(None)
    return answers
print(json.dumps({"shim": calls(sys.argv[1]), "engine": calls(sys.argv[2])}))
"""


def test_shim_answers_a_null_handle_as_the_engine_does_before_loading_it():
    """Before any initialize() the shim has no engine and answers NULL handles itself, with the
    engine's codes and message (the message is written in both)."""
    import sys
    engine = str(Path(processor.library_path()).with_name("libserving_processor_engine.so"))
    result = subprocess.run([sys.executable, "-c", NO_HANDLE_CALLS, processor.library_path(), engine],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert "loaded the engine" not in result.stderr  # the shim answered without loading it
    assert answers["shim"] == answers["engine"]
    assert answers["shim"][0] == [503, "model_buf is NULL: initialize() failed or was not called"]
