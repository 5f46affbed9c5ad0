# Two commands on a fresh machine (README.md):
#   make dev    local mode: the gateway with a Cognito stand-in, no AWS account
#   make test   linters, the documentation site and the whole test suite (what CI runs: .ci/run)
# Both create .venv and install the project with its test tools first, when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra arguments for local mode, e.g. make dev ARGS="--port 8081"
ARGS ?=
# Test processes (pytest-xdist). Each takes whole test files (--dist loadfile), so a file's
# module-wide servers start once; 2 fits a 2-core machine (most tests wait on their servers).
TEST_PROCESSES ?= 2

.PHONY: dev test lint install clean

dev: install
	$(BIN)/python -m gateway dev $(ARGS)

test: install lint
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile

# lint-imports keeps the dependency direction (pyproject.toml [tool.importlinter],
# docs/design/layout.md). The last step builds the documentation site (mkdocs.yml, docs/) with
# every warning an error, into the gitignored site/ (rebuilt from scratch each time).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

install: $(VENV)/.installed

# Re-installs when pyproject.toml changes. The README's install command, verbatim.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
