# One entry point for humans and CI. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: help install run test lint typecheck check clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/decisions: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/decisions  ## create .venv and install everything (embedded servers included)

run: install  ## run the whole service on embedded defaults, with demo data
	$(BIN)/decisions up --demo

test: install  ## run the whole test suite against real (embedded) services
	$(BIN)/pytest

lint: install  ## ruff
	$(BIN)/ruff check .

typecheck: install  ## mypy
	$(BIN)/mypy

check: lint typecheck test  ## everything CI runs

clean:  ## remove the venv and local data
	rm -rf $(VENV) var
