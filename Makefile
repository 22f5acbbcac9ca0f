# Two commands do all the set-up: `make demo` and `make test` create or update .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv browser clean
# Browser tests (tests/browser.py) drive headless Chromium; the fonts make text render in screenshots.
BROWSER_PACKAGES := chromium fonts-dejavu-core

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m jobs.capture
	$(PY) -m jobs.inspect stores/capture
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m jobs.intervene --quiet \
		--spec jobs/configs/intervene-default.yaml --set max_units=4 --out stores/interventions-demo

# Cheap once Chromium is on PATH. As root with apt-get it installs it; otherwise it says how.
# Never fails: without Chromium the browser tests skip (and fail where CI is set).
browser:
	@if command -v chromium || command -v chromium-browser || command -v google-chrome; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get; then \
		echo "installing headless Chromium for the browser tests: $(BROWSER_PACKAGES)" >&2; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); } >/dev/null \
		|| echo "apt-get could not install $(BROWSER_PACKAGES): browser tests will skip" >&2; \
	else \
		echo "no headless Chromium: browser tests will skip (apt-get install $(BROWSER_PACKAGES))" >&2; \
	fi >/dev/null

test: $(STAMP) browser
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
