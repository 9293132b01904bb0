# Parley: the README's commands. Every target installs what it needs, idempotently.
#   make run    setup, then start the server with embedded defaults
#   make test   setup, then every test (the test services start on loopback)
#   make bench  setup, then the benchmarks (results in bench/RESULTS.md)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMPS  := .make
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: worker build (compiler, meson's pkg-config deps, flatc),
# FFmpeg for recording, RabbitMQ for the event-bus tests where none runs.
APT_PACKAGES := build-essential pkg-config python3-venv libssl-dev libuv1-dev libsrtp2-dev \
	flatbuffers-compiler libflatbuffers-dev libabsl-dev ffmpeg fonts-dejavu-core rabbitmq-server

.PHONY: help setup apt venv worker run test bench lint clean
help:
	@echo "make run | make test | make bench | make lint | make setup"

setup: apt venv worker

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

venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,build]'
	@touch $@

# Builds (or finds in its cache) mediasoup-worker and generates the FBS bindings.
worker: venv
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) workers/native/build.py

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
	$(PY) -m pytest

bench: setup
	$(PY) bench/channel.py
	$(PY) bench/composite_recording.py

lint: venv
	$(PY) -m compileall -q control workers recording tests bench

clean:
	rm -rf $(STAMPS) $(VENV) .venv-mongo workers/native/generated
