# oeuvre: the headline commands. Every target that needs the venv builds it first.
#   make demo                          whole pipeline on the embedded default, offline
#   make test                          the test suite (what CI runs)
#   make train ARTIST=vangogh ARGS="train.max_train_steps=2000"

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARTIST ?= demo
ARGS ?=
IN ?= photos/
OUT_DIR := runs/$(ARTIST)
CONFIG := configs/$(ARTIST).yaml
ARTISTS = $(sort $(basename $(notdir $(filter-out configs/base.yaml,$(wildcard configs/*.yaml)))))

# torch: where no CUDA GPU answers, pin the CPU build so a fresh machine never pulls
# several GB of CUDA wheels; with CUDA, let pip take its default (CUDA) build.
# Override either, e.g. make install TORCH="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_CUDA),yes)
TORCH ?= torch
TORCH_INDEX ?=
else
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif

# Tests and the demo never reach for the hub: an uncached id fails at once, not after minutes of retries.
OFFLINE := HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: help install test lint format demo demo-base showcase data train restyle eval app bench clean check-artist

help:
	@sed -n '1,5p' Makefile | sed 's/^# \{0,1\}//'
	@echo "targets: install test lint demo demo-base showcase data train restyle eval app bench clean"
	@echo "artists with a config: $(ARTISTS)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The index is an extra source, so an unreachable one only costs a retry; a local wheel still wins.
	$(PY) -m pip install --quiet --retries 1 --no-deps "$(TORCH)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	@$(PY) -c "import torch; print('torch', torch.__version__, '| cuda:', torch.cuda.is_available())"
	@touch $@

test: install
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check-artist:
	@if [ ! -f "$(CONFIG)" ]; then \
		echo "error: no config for ARTIST=$(ARTIST) ($(CONFIG) does not exist); artists with a config: $(ARTISTS)" >&2; \
		exit 2; fi

demo: install
	$(OFFLINE) $(PY) -m oeuvre.demo

# The demo's base, committed in infer/bases/demo_base: pre-train it again (about 5 min on 2 cores).
demo-base: install
	$(OFFLINE) $(PY) -m oeuvre.demo --build-base

# The README's picture is the demo's own output: run the demo, then copy its showcase.
showcase: demo
	cp runs/demo/showcase.png bench/showcase.png

data: check-artist install
	$(PY) -m data $(CONFIG) $(ARGS)

# The dataset is built first when it is missing; the launch uses the project's own one-process config
# (LAUNCH=configs/accelerate/multi_gpu.yaml etc. for more), and --quiet makes a failure end with the
# trainer's own one-line error instead of accelerate's CalledProcessError traceback.
LAUNCH ?= configs/accelerate/default.yaml
DATASET := $(OUT_DIR)/dataset/train/metadata.jsonl

$(DATASET):
	$(MAKE) --no-print-directory data ARTIST=$(ARTIST) ARGS="$(ARGS)"

# Then the run recommends its own checkpoint, strength and scale from its held-out works (into the LoRA
# files' metadata); train.recommend=false, or a dataset without holdout, skips it.
train: check-artist install $(DATASET)
	$(VENV)/bin/accelerate launch --quiet --config_file $(LAUNCH) -m train $(CONFIG) $(ARGS)
	$(PY) -m infer recommend $(OUT_DIR) --after-training

restyle: check-artist install
	$(PY) -m infer restyle $(IN) --lora $(OUT_DIR) --out $(OUT_DIR)/restyled $(ARGS)

eval: check-artist install
	$(PY) -m infer evaluate $(OUT_DIR) $(ARGS)

# The web app on http://127.0.0.1:7860 over every trained run in runs/ (ARGS="--port 8000" etc.).
app: install
	$(PY) -m infer app --runs runs $(ARGS)

# Speed and memory targets live here, not in timed tests: bench/results.json and bench/RESULTS.md.
# QUICK=1: tiny models only (about 3 minutes); without it the full-size SD 1.5 architecture too (under 20).
# DIFFUSERS_SCRIPT=<diffusers checkout>/examples/dreambooth/train_dreambooth_lora.py: also the script itself.
bench: install
	$(OFFLINE) $(PY) -m oeuvre.bench $(if $(QUICK),--quick) $(if $(DIFFUSERS_SCRIPT),--script $(DIFFUSERS_SCRIPT))

clean:
	rm -rf runs/demo .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
