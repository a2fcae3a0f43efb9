# Every target creates .venv on first use, so a fresh machine needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CODE := crmd tests $(wildcard bench)

.PHONY: test lint fmt run clean-run bench chaos clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The dashboard's browser test drives Debian's chromium (Playwright never downloads a browser
# here). Installed when missing and this user may; otherwise that one test skips and says why.
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { echo "installing chromium for the browser test"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
	  echo "chromium not installed: the dashboard browser test will skip"

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy --strict crmd

fmt: $(STAMP)
	$(BIN)/ruff check --fix $(CODE)
	$(BIN)/ruff format $(CODE)

run: $(STAMP)
	$(BIN)/python -m crmd.dev.demo

# The demo afresh: its PostgreSQL, the development CRM's records and the admin token go (stop
# `make run` first).
clean-run:
	rm -rf .run

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

# The chaos suite: faults, then the invariants (docs/RELIABILITY.md). About 10 min; QUICK=1 about 3.
chaos: $(STAMP)
	$(BIN)/python -m bench chaos --out bench/results/chaos.json $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .run build *.egg-info .pytest_cache .mypy_cache .ruff_cache
