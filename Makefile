# Entry points. Each target sets up what it needs on a fresh clone:
#   make demo    the whole system live on this machine (Ctrl-C stops it)
#   make test    every test (firmware under the real MicroPython, Mosquitto, bridge, e2e)
#   make bench   benchmarks; figures also go to bench-results.json
#   make lint    ruff on all Python
#   make clean   remove the virtualenv, caches and demo state

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# MicroPython ESP32 type stubs live apart from the venv's site-packages so they
# never shadow CPython's standard library for the host code.
STUBS := $(VENV)/mpy-stubs
STUBS_STAMP := $(STUBS)/.installed-1.29
PYTEST_ARGS ?=

.PHONY: setup demo test bench lint clean system-deps

setup: system-deps $(STAMP) $(STUBS_STAMP)

# Debian packages the project needs: Mosquitto (the broker the demo and tests
# start) and python3-venv. Installed with apt-get when missing and root;
# otherwise a clear message says what to install.
system-deps:
	@sh .ci/system-deps.sh

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

$(STUBS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-user --upgrade --target $(STUBS)/lib/site-packages \
		'micropython-esp32-stubs~=1.29.0'
	@touch $@

demo: setup
	$(BIN)/kiosk-sim demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m simulator.bench --json bench-results.json

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache .mypy_cache bench-results.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
