# The commands the README gives. Everything sets itself up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[edge,cloud,models,demo]'
	touch $@

# The train extra (torch, CPU) too: the scene-detector training job's test fine-tunes a model.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/aiot models build --if-missing
	$(BIN)/aiot demo

# Mosquitto (and docker-compose, to validate deploy/compose.yml) for the integration tests;
# Debian's Chromium for the dashboard's browser tests (Playwright drives /usr/bin/chromium);
# promtool (Debian's prometheus package) checks the alert rules and the scrape config.
services:
	@if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null \
	    || ! command -v docker-compose >/dev/null || [ ! -x /usr/bin/chromium ] \
	    || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      mosquitto mosquitto-clients docker-compose chromium prometheus >/dev/null; \
	  else \
	    echo "Tests need Mosquitto, docker-compose, Chromium and promtool: sudo apt-get install mosquitto mosquitto-clients docker-compose chromium prometheus" >&2; \
	    exit 1; \
	  fi; \
	fi
	@command -v initdb >/dev/null && command -v pg_ctl >/dev/null || { \
	  echo "Tests need PostgreSQL server binaries (initdb, pg_ctl) on PATH: apt-get install postgresql" >&2; exit 1; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Three phases, each under 15 minutes: the suite, the runs of minutes (schemathesis, the
# drift loop, shadow windows, outages), then the soak-style fault runs that repeat a case on
# another store or broker; each bounded by pytest-timeout and printing its slowest tests.
test: $(VENV)/.installed-dev services lint
	$(BIN)/aiot models build --if-missing
	$(BIN)/pytest -m "not soak and not slow" --durations=15
	$(BIN)/pytest -m "slow and not soak" --durations=15
	$(BIN)/pytest -m "soak" --durations=15

# Every benchmark in its own process; exits 1 if one failed or timed out (bench/__main__.py),
# after writing every result to bench-results.json.
bench: $(VENV)/.installed-dev services
	$(BIN)/aiot models build --if-missing
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench-results.json
