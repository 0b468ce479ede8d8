# WardWatch developer commands. `make test` is what CI runs (.ci/run) and sets itself up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := edge_agent drivers server simulators

.PHONY: test demo lint typecheck pytest setup system-packages schema lock clean

test: setup system-packages lint typecheck pytest

# Broker, server and simulated homes on this machine (wardwatch demo --help for DEMO_ARGS). Without root and
# without Mosquitto it goes on: the demo then runs an embedded broker (docs/server.md, "The demo").
demo: setup
	-@scripts/ensure-system-packages.sh
	$(BIN)/wardwatch demo $(DEMO_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "WardWatch needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

system-packages:
	@scripts/ensure-system-packages.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy $(PACKAGES)

pytest: setup system-packages
	$(BIN)/pytest -W error $(PYTEST_ARGS)

# Full-size reliability run and the 30-minute soak (by hand; results go to docs/scaling.md).
soak: setup system-packages
	WARDWATCH_RELIABILITY=full $(BIN)/pytest -W error tests/reliability
	$(BIN)/python bench/soak.py --homes 1000 --minutes 30 --workers 2 --rate 2 --batch-interval 5 --out soak-result.json

schema: setup
	$(BIN)/wardwatch schema --out docs/schema

# Re-resolve the pinned versions from pyproject's lower bounds in a throwaway venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	{ head -n 2 constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
