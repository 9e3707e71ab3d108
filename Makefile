# One entry point for humans and CI. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium

.PHONY: help install browser run test lint typecheck check clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/decisions: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/decisions  ## create .venv and install everything (embedded servers included)

browser:  ## Debian's Chromium for the admin UI's browser tests (installed with apt-get if missing)
	@if [ ! -x $(CHROMIUM) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make: /usr/bin/chromium is missing: install Debian's chromium package (as root: apt-get install chromium)"; exit 1; \
	  fi; \
	fi

run: install  ## run the whole service on embedded defaults, with demo data
	$(BIN)/decisions up --demo

test: install browser  ## run the whole test suite against real (embedded) services
	$(BIN)/pytest

lint: install  ## ruff
	$(BIN)/ruff check .

typecheck: install  ## mypy
	$(BIN)/mypy

check: lint typecheck test  ## everything CI runs

clean:  ## remove the venv and local data
	rm -rf $(VENV) var
