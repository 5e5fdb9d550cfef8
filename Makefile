# uaclm-dist bootstrap. Every target sets up what it needs, idempotently, from a fresh machine.
#   make test   - venv + the whole test suite (what CI runs)
#   make demo   - venv + the main job on its embedded default config
#   make lint   - ruff
#   make bench  - benchmarks (tables printed and written under .bench/)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Debian packages the tests drive for real (compilers for DeepSpeed's JIT ops). Installed only
# when running as root and missing.
DEBIAN_PACKAGES := build-essential

.PHONY: venv test lint bench demo system-packages clean

venv: $(STAMP)

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "warning: missing Debian packages (need root to install):$$missing" >&2; fi; \
	fi

$(STAMP): pyproject.toml requirements-assets.txt | system-packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==24.3.1" "setuptools==84.2.1" "wheel==0.48.0"
	# torch first (CPU wheel from local disk here), then deepspeed built against it.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q --no-build-isolation "deepspeed==0.19.8"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps -r requirements-assets.txt
	@touch $(STAMP)

test: venv
	$(PY) -m pytest tests -q

lint: venv
	$(VENV)/bin/ruff check uaclm_dist tests benchmarks

bench: venv
	$(PY) benchmarks/loss_memory.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
