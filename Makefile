# Parley: the README's commands. Every target installs what it needs, idempotently.
#   make run          setup, then start the server with embedded defaults
#   make test         setup, make lint, then every test (the test services start on loopback)
#   make bench        setup, then the benchmarks (results in bench/RESULTS.md)
#   make lint         ruff (lint + format check) and mypy over the whole tree
#   make lint-report  what make lint still finds, counted per directory and per rule
#   make lock         regenerate requirements.lock from pyproject.toml (UPGRADE=1: newest pins)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
LOCK    := requirements.lock
STAMPS  := .make
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: worker build (compiler, meson's pkg-config deps, flatc),
# FFmpeg for recording, RabbitMQ for the event-bus tests where none runs, Redis for the
# cluster tests where none runs, Chromium for
# the meeting page's browser tests (driven by Playwright; no browser is ever downloaded).
APT_PACKAGES := build-essential pkg-config python3-venv libssl-dev libuv1-dev libsrtp2-dev \
	flatbuffers-compiler libflatbuffers-dev libabsl-dev ffmpeg fonts-dejavu-core rabbitmq-server \
	redis-server chromium

.PHONY: help setup apt venv worker web run test bench lint lint-report lock clean
help:
	@echo "make run | make test | make bench | make lint | make lint-report | make lock | make setup"

setup: apt venv worker web

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@# npm fetches the pinned mediasoup package; Debian's npm only where none is installed
	@# (it conflicts with a NodeSource nodejs).
	@command -v npm >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q npm; }

# The venv is the lock file, exactly: every package pinned with its hashes, then the
# project itself without dependencies and without build isolation (its build requirements,
# setuptools and wheel, are in the lock too), so nothing unpinned is downloaded. Runs again
# when the lock or pyproject.toml changes; `pip check` catches a lock that no longer
# satisfies pyproject.toml (a dependency added without `make lock`).
venv: $(STAMPS)/venv
$(STAMPS)/venv: $(LOCK) pyproject.toml
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --require-hashes -r $(LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@$(PIP) check >/dev/null || { $(PIP) check; \
		echo "venv: $(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	@touch $@

# requirements.lock: pyproject.toml's dependencies and its test, build and lint extras,
# resolved against PyPI for CPython 3.11 on linux x86_64 (glibc 2.36: Debian 12), with the
# hashes of every file of each pinned release. --no-config and --index-url: this machine's
# pip/uv settings (local indexes, constraint files) play no part. Pins that still fit are
# kept; UPGRADE=1 moves every pin to the newest release that fits.
UV_COMPILE := pip compile pyproject.toml --extra test --extra build --extra lint \
	--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	--index-url https://pypi.org/simple --no-config --custom-compile-command "make lock"
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv --quiet $(UV_COMPILE) $(if $(UPGRADE),--upgrade) -o $(LOCK)

# uv itself comes from the lock (its pin and hashes), without building the whole venv:
# `make lock` must work when the venv cannot be built from a stale lock.
$(VENV)/bin/uv:
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@awk '/^uv==/ {on = 1} on {print} on && !/\\$$/ {exit}' $(LOCK) > $(STAMPS)/uv.requirements
	$(PIP) install -q --require-hashes --no-deps -r $(STAMPS)/uv.requirements

# Builds (or finds in its cache) mediasoup-worker and generates the FBS bindings.
worker: venv
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) workers/native/build.py

# The meeting page (web/): exactly web/package-lock.json (npm ci, again when the lock
# changes), then the esbuild bundle in web/dist (again when a source changes).
# --ignore-scripts: nothing needs an install script (esbuild's binary is a dependency).
WEB := web
WEB_SOURCES := $(WEB)/build.mjs $(wildcard $(WEB)/src/*)
web: $(WEB)/dist/index.html
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json $(WEB)/package.json | apt
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@
$(WEB)/dist/index.html: $(WEB)/node_modules/.package-lock.json $(WEB_SOURCES)
	cd $(WEB) && npm run --silent build

run: setup
	$(VENV)/bin/parley run

# Test services (tests/services.py). The MongoDB-wire server used when there is no
# mongod on PATH and no MONGODB_URI is mongoeco, which needs Python >= 3.13: it gets
# its own venv. MONGO_PYTHON=/path/to/python3.13 picks the interpreter.
MONGO_VENV   := .venv-mongo
MONGOECO_VER := 4.11.0
.PHONY: services-setup
services-setup: $(MONGO_VENV)/.mongoeco-$(MONGOECO_VER)
$(MONGO_VENV)/.mongoeco-$(MONGOECO_VER):
	@if [ -n "$$MONGODB_URI" ] || command -v mongod >/dev/null; then \
		echo "services-setup: MONGODB_URI or mongod present, mongoeco not needed"; exit 0; fi; \
	py=$$(for c in $(MONGO_PYTHON) python3.14 python3.13 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[3-9]*/bin/python3 \
		/usr/local/bin/python3.13 /usr/bin/python3.13 python3; do \
		"$$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 13))' 2>/dev/null && { echo "$$c"; break; }; done); \
	if [ -z "$$py" ]; then echo "services-setup: no Python >= 3.13 found (PATH, pyenv, /usr/local/bin)." \
		"mongoeco, the MongoDB-wire test server, needs one: install one and/or set MONGO_PYTHON=...," \
		"or put mongod on PATH, or set MONGODB_URI." >&2; exit 1; fi; \
	echo "services-setup: mongoeco $(MONGOECO_VER) into $(MONGO_VENV) with $$py"; \
	rm -rf $(MONGO_VENV) && "$$py" -m venv $(MONGO_VENV) && \
	$(MONGO_VENV)/bin/python -m pip install -q 'mongoeco[wire]==$(MONGOECO_VER)' && touch $@

test: setup services-setup
	@$(MAKE) --no-print-directory lint
	$(PY) -m pytest

# The Node peer of bench/channel.py installs exactly bench/node/package-lock.json (npm ci),
# again whenever the lock changes (npm ci rewrites node_modules/.package-lock.json).
# --ignore-scripts: mediasoup's postinstall would fetch a worker; MEDIASOUP_WORKER_BIN names ours.
NODE_BENCH := bench/node
$(NODE_BENCH)/node_modules/.package-lock.json: $(NODE_BENCH)/package-lock.json $(NODE_BENCH)/package.json
	cd $(NODE_BENCH) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

bench: setup $(NODE_BENCH)/node_modules/.package-lock.json
	$(PY) bench/channel.py
	$(PY) bench/composite_recording.py
	$(PY) bench/capacity.py --write bench/RESULTS.md
	$(PY) bench/soak.py

# ruff and mypy read their configuration from pyproject.toml; mypy checks control, workers,
# recording, tests and bench (strict for workers.* and control.auth.*). All three run, and
# the target fails if any of them found something.
lint: venv
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

lint-report: venv
	@$(PY) .ci/lint_report.py

clean:
	rm -rf $(STAMPS) $(VENV) .venv-mongo workers/native/generated .mypy_cache .ruff_cache \
		$(WEB)/node_modules $(WEB)/dist
