# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
APT_PACKAGES := build-essential pkg-config libssl-dev libsodium-dev libsecp256k1-dev redis-server redis-tools

.PHONY: demo test system-deps venv install inplace sanitize fuzz-build fuzz fuzz-ci bench lint clean

demo: install
	$(VENV)/bin/nanomoni demo

# Tests run against the installed wheel, never the source tree.
test: install lint
	NANOMONI_REQUIRE_INSTALLED=1 $(VENV)/bin/pytest -q

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: system-deps $(VENV)/bin/python

install: venv
	rm -f nanomoni/_core*.so  # a stale in-place build must not ride into the wheel
	$(PIP) install -q ".[test,bench,dev]"

# Developer build: compiles the core into the source tree (use with PYTHONPATH=.).
inplace: venv
	$(PIP) install -q scikit-build-core cython cmake ninja
	$(VENV)/bin/cmake -S . -B build/inplace -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DPython_EXECUTABLE=$(abspath $(PY)) >/dev/null
	$(VENV)/bin/cmake --build build/inplace
	cp build/inplace/_core*.so nanomoni/

# The native core built with ASan + UBSan, and the core tests run against it.
# Installs the runtime and test dependencies named in pyproject.toml, never the
# package itself: the sanitized copy in build/sanitize-pkg is what gets tested.
PROJECT_DEPS = $(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print(" ".join(p["dependencies"] + p["optional-dependencies"]["test"]))'
sanitize: venv
	$(PIP) install -q scikit-build-core cython cmake ninja $$($(PROJECT_DEPS))
	$(VENV)/bin/cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNANOMONI_SANITIZE=ON \
	  -DPython_EXECUTABLE=$(abspath $(PY)) >/dev/null
	$(VENV)/bin/cmake --build build/sanitize
	rm -rf build/sanitize-pkg && mkdir -p build/sanitize-pkg && cp -r nanomoni build/sanitize-pkg/ \
	  && rm -f build/sanitize-pkg/nanomoni/_core*.so && cp build/sanitize/_core*.so build/sanitize-pkg/nanomoni/
	@# -P keeps the source tree (and its unsanitized core) off sys.path.
	export PYTHONPATH=build/sanitize-pkg \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  NANOMONI_SANITIZED=1 && \
	$(PY) -P -c 'import sys, nanomoni._core as c; sys.exit(0 if "/sanitize-pkg/" in c.__file__ else "unsanitized core: " + c.__file__)' && \
	$(PY) -P -m pytest -q -p no:randomly --capture=sys tests/unit/test_core_*.py $(SANITIZE_ARGS) \
	  --deselect tests/unit/test_core_merkle.py::test_core_native_memory_is_released
# (That one measures RSS, which ASan's quarantine keeps high; the main suite runs it.)

# Fuzzing (fuzz/run.py): every target in fuzz/targets/ under atheris, against a
# copy of the package whose core clang built with ASan + UBSan + libFuzzer
# coverage (build/fuzz-pkg). Any crash, failed check or uncaught exception
# fails the run. `fuzz-ci` is the CI budget: 180 s for all targets, at most
# 7 s of fuzzing each (+1.5 s start-up): the 14 core targets take about 2 min,
# leaving 1 min for targets added later (HTTP body decoding).
FUZZ_DEPS = $(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	d = p["optional-dependencies"]; print(" ".join(p["dependencies"] + d["test"] + d["fuzz"]))'
fuzz-build: APT_PACKAGES += clang
fuzz-build: venv
	$(PIP) install -q scikit-build-core cython cmake ninja $$($(FUZZ_DEPS))
	$(VENV)/bin/cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNANOMONI_FUZZ=ON \
	  -DCMAKE_C_COMPILER=clang -DPython_EXECUTABLE=$(abspath $(PY)) >/dev/null
	$(VENV)/bin/cmake --build build/fuzz
	rm -rf build/fuzz-pkg && mkdir -p build/fuzz-pkg && cp -r nanomoni build/fuzz-pkg/ \
	  && rm -f build/fuzz-pkg/nanomoni/_core*.so && cp build/fuzz/_core*.so build/fuzz-pkg/nanomoni/

FUZZ_SECONDS ?= 600
fuzz: fuzz-build
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS) --keep-corpus

fuzz-ci: fuzz-build
	$(PY) fuzz/run.py --seconds 180 --max-share 7

bench: install
	$(VENV)/bin/pytest bench -q --benchmark-columns=mean,median,ops,rounds

lint: install
	$(VENV)/bin/ruff check nanomoni tests bench fuzz
	$(VENV)/bin/mypy
	cd fuzz && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --explicit-package-bases .

clean:
	rm -rf build dist nanomoni/_core*.so
