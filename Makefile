# Two entry points: `make demo` and `make test` (both create .venv when needed).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# setuptools leaves src/dbtflow.egg-info behind; on sys.path it is a second copy of the
	# distribution, and Airflow would load dbtflow's plugin twice (a plugin import error).
	rm -rf src/*.egg-info
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dbtflow demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	# Not incremental: mypy 1.x sometimes crashes on its own cache after the virtualenv changes.
	$(BIN)/mypy --no-incremental

# The browser tests of the UI drive Debian's Chromium through Playwright (whose own browser
# download does not work everywhere); install it when missing (needs root, as in CI).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Two workers, a test file each at a time (--dist loadfile keeps a file's shared set-up in one
# worker): most end-to-end tests wait on Airflow's scheduler or on dbt, so two files overlap well
# on two cores. Files start in collection order, where tests/conftest.py puts the slowest first
# (xdist's default reorder would start the one-test deployment files last, together).
test: lint browser
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=30

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) build *.egg-info
