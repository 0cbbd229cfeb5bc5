# bof: every set-up step a fresh machine needs lives here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here (not in pyproject) to the builds this lab keeps on disk.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install train test-unit test test-tables test-all lint tensorboard bench ablation-demo ablation-mini-all mechanisms-mini clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install bof (editable) with its dependencies

train: $(STAMP)  ## train the default config (narrow YOLOv3, synthetic data, CPU) and print its VOC07 mAP
	$(VENV)/bin/bof-train $(ARGS)

test-unit: $(STAMP)  ## the quick tier for contributors: tests/unit, the package's parts one by one
	$(PY) -m pytest -q tests/unit -m "not slow and not tables" $(ARGS)

test: $(STAMP)  ## the README's test command: tests/unit and tests/e2e, all but the full-scale tables and the slow demo
	$(PY) -m pytest -q -m "not slow and not tables" $(ARGS)

test-tables: $(STAMP)  ## every row of Tables 1-6 and of the designs at full scale: one iteration each on generated data (~30 min)
	$(PY) -m pytest -q -m tables $(ARGS)

test-all: $(STAMP)  ## run every test, the slow end-to-end runs and the full-scale tables included
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check src scripts tests
	$(VENV)/bin/ruff format --check src scripts tests

tensorboard: $(STAMP)  ## serve the TensorBoard of every run under outputs/ and multirun/
	mkdir -p outputs multirun
	$(VENV)/bin/tensorboard --logdir_spec outputs:outputs,multirun:multirun --bind_all

bench: $(STAMP)  ## training-throughput benchmark (scripts/bench_train.py)
	$(PY) scripts/bench_train.py $(ARGS)

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache src/*.egg-info

ablation-demo: $(STAMP)  ## Table 2's miniature (scale=mini, seed 0) on a CPU in under 30 min, then its report with intervals
	.venv/bin/bof-train -m +sweep=table2 scale=mini trainer.progress=false $(ARGS)
	.venv/bin/bof-report multirun/table2-mini

ablation-mini-all: $(STAMP)  ## every table's miniature (Tables 2-3: seeds 0-2), then their reports (docs/mini_scale.md)
	.venv/bin/bof-train -m +sweep=table2 scale=mini seed=0,1,2 trainer.progress=false $(ARGS)
	.venv/bin/bof-train -m +sweep=table3 scale=mini seed=0,1,2 trainer.progress=false $(ARGS)
	for t in table1 table4 table5 table6; do .venv/bin/bof-train -m +sweep=$$t scale=mini trainer.progress=false $(ARGS) || exit 1; done
	for t in table1 table2 table3 table4 table5 table6; do .venv/bin/bof-report multirun/$$t-mini || exit 1; done
	$(PY) scripts/mini_mechanisms.py --runs multirun/table2-mini

mechanisms-mini: $(STAMP)  ## the mini scale's four mechanism checks on Table 2's miniature (docs/mini_scale.md)
	$(PY) scripts/mini_mechanisms.py --runs multirun/table2-mini $(ARGS)
