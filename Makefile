# Every target creates .venv on first use, so a fresh machine needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test lint fmt run bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check crmd tests bench
	$(BIN)/ruff format --check crmd tests bench
	$(BIN)/mypy --strict crmd

fmt: $(STAMP)
	$(BIN)/ruff check --fix crmd tests bench
	$(BIN)/ruff format crmd tests bench

run: $(STAMP)
	$(BIN)/python -m crmd.devrun

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .run build *.egg-info .pytest_cache .mypy_cache .ruff_cache
