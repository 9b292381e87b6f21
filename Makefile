# rca-lightning: `make run` runs the whole pipeline on the built-in dataset, `make test` runs the test suite.
# Both create the virtual environment and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
# Processes the test suite runs over (pytest-xdist): most tests use one core, so one per core. A worker
# that runs out of tests takes some of another's (--dist worksteal): the end-to-end tests' lengths differ
# by minutes.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist worksteal

# The environment is the user's: nothing is exported here (wandb runs offline by itself without an API key or
# a network; HF_HUB_OFFLINE, WANDB_MODE and the like are respected as set).
EXTRAS := dev,wandb,docs
MAKE_START := $(shell date +%s)

# $(call step,what,command): print what is being done, run it, print how long it took.
define step
	@printf '==> %s\n' "$(1)"; start=$$(date +%s); $(2) && printf '    %s: %s s\n' "$(1)" "$$(( $$(date +%s) - start ))"
endef

.PHONY: install run test test-fast lint format docs clean distclean

install: $(VENV)/.installed

# torch goes in first, pinned, so that nothing later pulls a CUDA build of the newest torch;
# then the package with its pins (and the docs tools: `make test` builds the site); then the hook that lets
# torchvision import next to a CPU-only torch, only where its compiled extension does not load (it says why).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(call step,virtual environment in $(VENV),$(PYTHON) -m venv $(VENV))
	$(call step,pip,$(BIN)/python -m pip install --progress-bar off --upgrade pip)
	$(call step,torch (pinned),$(BIN)/python -m pip install --progress-bar off -c constraints.txt torch)
	$(call step,rca-lightning and its pins [$(EXTRAS)],$(BIN)/python -m pip install --progress-bar off -c constraints.txt -e ".[$(EXTRAS)]")
	$(call step,torchvision import hook,$(BIN)/python src/rca_lightning/compat/install.py)
	$(call step,import check,$(BIN)/python -c "import timm; import lightning; import torchmetrics; import rca_lightning")
	@printf '==> installed in %s s\n' "$$(( $$(date +%s) - $(MAKE_START) ))"
	touch $@

run: install
	$(BIN)/rca-pipeline $(ARGS)

test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The edit-test loop: the unit tests, without the end-to-end ones (marked slow).
test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# The documentation site into site/, strictly (a broken link or reference fails).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf logs site .pytest_cache .ruff_cache build src/*.egg-info
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
