# stroke-triage: `make demo` runs the whole path once; `make test` runs the suite.
# Both create .venv on first use (Python 3.11 and make are all they need).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# TORCH=lean (default) installs torch without triton, its GPU kernel compiler (897 MB), which
# nothing here needs to import or run torch, CPU or GPU. TORCH=full installs all torch asks for
# (use it for torch.compile on a GPU). Changing it needs `make clean` first.
TORCH ?= lean
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each taking whole test files; 0 runs the suite in this one.
PYTEST_WORKERS ?= 2
SERIES ?=
ARGS ?=

.PHONY: demo test lint typecheck imports venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(TORCH),full)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
else ifeq ($(TORCH),lean)
	$(BIN)/python -m pip install --quiet --dry-run --ignore-installed -c constraints.txt \
		--report $(VENV)/resolved.json -e '.[dev]'
	$(BIN)/python deploy/pinned_requirements.py --without triton \
		$(VENV)/resolved.json > $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
else
	$(error TORCH must be lean or full, not $(TORCH))
endif
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/stroke-triage demo $(if $(SERIES),--series $(SERIES)) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy benchmarks

imports: $(STAMP)
	$(BIN)/lint-imports

test: lint typecheck imports
	$(BIN)/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
