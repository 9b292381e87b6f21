# rca-lightning: `make run` runs the whole pipeline on the built-in dataset, `make test` runs the test suite.
# Both create the virtual environment and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

# No hub retries, wandb offline without an API key, no albumentations update check.
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export NO_ALBUMENTATIONS_UPDATE ?= 1

.PHONY: install run test lint format docs clean distclean

install: $(VENV)/.installed

# torch goes in first, pinned, so that nothing later pulls a CUDA build of the newest torch;
# then the package with its pins; then the hook that lets torchvision import next to a CPU-only torch.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,wandb]"
	$(BIN)/python src/rca_lightning/compat/install.py
	$(BIN)/python -c "import timm, lightning, torchmetrics, rca_lightning"
	touch $@

run: install
	$(BIN)/rca-pipeline $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# The documentation site into site/, strictly (a broken link or reference fails).
docs: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf logs site .pytest_cache .ruff_cache build src/*.egg-info
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
