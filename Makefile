# The README's two commands: `make reproduce` (the main job) and `make test`.
# Each creates the project's virtual environment in .venv on first use, and again only
# when pyproject.toml or constraints.txt change.

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= default
TEST_WORKERS ?= 2
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.llmimg-installed

.PHONY: help venv reproduce test browser-deps lab bench clean

help:
	@echo "make reproduce  run every notebook on a fresh kernel (PROFILE=$(PROFILE)); each trains what it needs; writes figures/ and build/report.html"
	@echo "make test       unit tests and every notebook under nbval at the smoke profile"
	@echo "make browser-deps  install what tests/test_demo_browser.py needs: Debian's chromium (apt-get, as root) and playwright"
	@echo "make lab        open JupyterLab on notebooks/ with the project's environment"
	@echo "make bench      speed benchmarks of data loading and the pipeline (PROFILE=$(PROFILE)), JSON in build/bench.json"
	@echo "make site       the course as a website in build/site/ (committed notebooks, not re-run); make site-test checks it"
	@echo "make clean      remove build/ and figures/ (keeps .venv and the model cache)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "llmimg needs Python 3.11 or newer; set PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $@

venv: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/llmimg reproduce --profile $(PROFILE)

# The tests and the notebooks run on TEST_WORKERS processes (pytest-xdist); --dist loadfile keeps each file's
# tests (and each notebook's cells, which share one kernel) on one worker, in order. One thread each: the smoke
# models are tiny, and two workers with two threads each on two cores ran slower than one worker (19 min vs 13).
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LLMIMG_PROFILE=smoke \
		$(BIN)/python -m pytest tests notebooks -n $(TEST_WORKERS) --dist loadfile --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

# What tests/test_demo_browser.py needs (without them `make test` skips it, saying why): a Chromium,
# Debian's through apt-get when none is found, and Playwright, which drives it (it downloads no browser).
browser-deps: $(STAMP)
	@found=$$(for name in chromium chromium-browser google-chrome; do command -v $$name; done | head -n 1); \
	if [ -n "$$found" ]; then \
		echo "Chromium found: $$found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "No Chromium found; installing Debian's: apt-get update && apt-get install -y chromium"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "No Chromium found, and it cannot be installed here (that needs root and apt-get)."; \
		echo "Install one (Debian: sudo apt-get install chromium), or set LLMIMG_CHROMIUM to its path."; \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,browser]"

# Containers often run as root, which JupyterLab refuses unless told.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: $(STAMP)
	@mkdir -p build
	$(BIN)/llmimg bench --profile $(PROFILE) --json | tee build/bench.json

# --- The course as a website (issue 30; website/build.py says how) ---------------------------------------
# `make site` builds build/site/ from the README, the committed notebooks and docs/, never re-running a notebook.
# It installs what it needs: the `site` extra into .venv (Sphinx, MyST-NB), and with npm (Node.js 18+) the
# JavaScript the pages bundle to work offline, MathJax and mermaid, pinned in website/package-lock.json.
# `make site-test` runs tests/test_site*.py (links, figures, math; Chromium when there is one).
.PHONY: site site-test
SITE_STAMP := $(VENV)/.llmimg-site-installed
SITE_JS    := build/site-js

$(SITE_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,site]"
	@touch $@

$(SITE_JS)/.installed: website/package.json website/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make site needs npm (Node.js 18 or newer) for MathJax and mermaid"; exit 1; }
	@mkdir -p $(SITE_JS) && cp website/package.json website/package-lock.json $(SITE_JS)/
	cd $(SITE_JS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

site: $(SITE_STAMP) $(SITE_JS)/.installed
	$(BIN)/python website/build.py

site-test: $(SITE_STAMP) $(SITE_JS)/.installed
	$(BIN)/python -m pytest tests/test_site.py tests/test_site_sources.py -p no:cacheprovider
# --- end of the website's block --------------------------------------------------------------------------

clean:
	rm -rf build figures
