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

# The tools that `python -m jobs.benchmark alternatives` compares with our capture
# (docs/performance.md), each in its own venv under .venv-alt/ (git-ignored), never in .venv.
# torch stays on the pinned CPU wheel; torchvision stays out. mi-crow declares `overcomplete`
# (which pulls torchvision and timm: transformers then fails to import any model) and numpy<2
# (while the newest pyarrow needs numpy 2), so it is installed without its declared
# dependencies, beside the ones its activation-saving path imports.
ALT_VENV := .venv-alt
ALT_PIN := -c benchmarks/alternatives/constraints.txt
.PHONY: bench-alternatives
bench-alternatives: $(ALT_VENV)/sae-lens/.installed $(ALT_VENV)/mi-crow/.installed

$(ALT_VENV)/sae-lens/.installed: benchmarks/alternatives/constraints.txt
	test -x $(ALT_VENV)/sae-lens/bin/python || $(PYTHON) -m venv $(ALT_VENV)/sae-lens
	$(ALT_VENV)/sae-lens/bin/python -m pip install -q --upgrade pip
	$(ALT_VENV)/sae-lens/bin/python -m pip install -q $(ALT_PIN) torch==2.13.0 'sae-lens>=6,<7'
	! $(ALT_VENV)/sae-lens/bin/python -m pip show -q torchvision 2>/dev/null
	touch $@

$(ALT_VENV)/mi-crow/.installed: benchmarks/alternatives/constraints.txt
	test -x $(ALT_VENV)/mi-crow/bin/python || $(PYTHON) -m venv $(ALT_VENV)/mi-crow
	$(ALT_VENV)/mi-crow/bin/python -m pip install -q --upgrade pip
	$(ALT_VENV)/mi-crow/bin/python -m pip install -q $(ALT_PIN) torch==2.13.0 'numpy<2' \
		'datasets>=4,<5' 'pyarrow<22' accelerate safetensors tqdm transformers
	$(ALT_VENV)/mi-crow/bin/python -m pip install -q --no-deps 'mi-crow==1.0.0.post10'
	! $(ALT_VENV)/mi-crow/bin/python -m pip show -q torchvision 2>/dev/null
	touch $@
