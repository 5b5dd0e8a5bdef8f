# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
APT_PACKAGES := build-essential pkg-config libssl-dev libsodium-dev libsecp256k1-dev redis-server redis-tools
# Only the tests need these: `prometheus` and `promtool` run the alerts and the dashboard.
TEST_APT_PACKAGES := prometheus

.PHONY: demo test system-deps venv install inplace sanitize bench lint clean

demo: install
	$(VENV)/bin/nanomoni demo

# Tests run against the installed wheel, never the source tree.
test: install lint
	NANOMONI_REQUIRE_INSTALLED=1 $(VENV)/bin/pytest -q

system-deps:
	@missing=$$(for p in $(APT_PACKAGES) $(TEST_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
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

bench: install
	$(VENV)/bin/pytest bench -q --benchmark-columns=mean,median,ops,rounds

lint: install
	$(VENV)/bin/ruff check nanomoni tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf build dist nanomoni/_core*.so
