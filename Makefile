# careloop: `make demo` runs the demo, `make test` runs every check. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PostgreSQL tests run when CARELOOP_TEST_PG_URL is set; by default we use a local server if one answers.
PG_DEFAULT_URL := postgresql+psycopg://postgres@127.0.0.1:5432/postgres

.PHONY: demo test lint typecheck pytest venv debian-packages docs clean

demo: $(STAMP)
	$(BIN)/careloop demo

test: $(STAMP) debian-packages lint typecheck pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "careloop needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The tests start their own Mosquitto and influxd; install the Debian packages when missing (as root).
debian-packages:
	@missing=""; \
	[ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/bin/influxd ] || command -v influxd >/dev/null 2>&1 || missing="$$missing influxdb"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages:$$missing; run 'sudo apt-get install$$missing' or 'make test' as root" >&2; \
	    exit 1; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@url="$${CARELOOP_TEST_PG_URL:-}"; \
	if [ -z "$$url" ] && $(BIN)/python -c "import psycopg; psycopg.connect('$(subst +psycopg,,$(PG_DEFAULT_URL))', connect_timeout=3).close()" 2>/dev/null; then \
	  url="$(PG_DEFAULT_URL)"; \
	fi; \
	if [ -n "$$url" ]; then echo "PostgreSQL tests use $$url"; else echo "no PostgreSQL answered at $(PG_DEFAULT_URL): PostgreSQL tests will be skipped (set CARELOOP_TEST_PG_URL)"; fi; \
	CARELOOP_TEST_PG_URL="$$url" $(BIN)/pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/careloop contract docs --write docs/protocol.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
