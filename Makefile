# The README's two commands: `make reproduce` (the main job) and `make test`.
# Each creates the project's virtual environment in .venv on first use, and again only
# when pyproject.toml or constraints.txt change.

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= default
TEST_WORKERS ?= 2
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.llmimg-installed

.PHONY: help venv reproduce test test-colab browser-deps lab bench clean

help:
	@echo "make reproduce  run every notebook on a fresh kernel (PROFILE=$(PROFILE)); each trains what it needs; writes figures/ and build/report.html"
	@echo "make test       unit tests and every notebook under nbval at the smoke profile"
	@echo "make browser-deps  install what tests/test_demo_browser.py needs: Debian's chromium (apt-get, as root) and playwright"
	@echo "make lab        open JupyterLab on notebooks/ with the project's environment"
	@echo "make bench      speed benchmarks of data loading and the pipeline (PROFILE=$(PROFILE)), JSON in build/bench.json"
	@echo "make site       the course as a website in build/site/ (committed notebooks, not re-run); make site-test checks it"
	@echo "make test-colab notebooks 00, 06, 09 at smoke on a copy of Colab's runtime (Python 3.13, constraints-colab.txt)"
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

# --- Colab's runtime (issue 29) ------------------------------------------------------------------------------
# `make test-colab` mirrors Colab as far as the package registries allow. .venv-colab, on Python 3.13, holds Colab's
# preinstalled versions (constraints-colab.txt; PyPI's torch 2.11 cp313 wheel is a CUDA build, 5 GB with its CUDA
# libraries), made again only when that file changes. On every run the notebooks' setup cell then installs llmimg
# from this checkout as it does on Colab, with no constraints (.ci/colab_runtime.py reads the cell), and the run
# fails if that changed any of Colab's versions. Then, under `make test`'s flags and on a fresh model cache as on a
# new Colab: the tests of the demo (ipywidgets 7.7), of the version shim and of the pretrained loaders (transformers
# 5.15, diffusers 0.39), and notebooks 00, 06 and 09 under nbval. Measured on 2 shared cores: 6 min from nothing,
# 1.5 min with .venv-colab made.

# Python 3.13 from PATH, else pyenv's newest 3.13.
COLAB_PYTHON ?= $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || \
	{ prefix=$$(pyenv prefix 3.13 2>/dev/null) && echo "$$prefix/bin/python3.13"; } || echo python3.13)
COLAB_VENV   ?= .venv-colab
COLAB_BIN    := $(COLAB_VENV)/bin
COLAB_STAMP  := $(COLAB_VENV)/.colab-image-installed
COLAB_TESTS  := tests/test_demo.py tests/test_versions.py tests/test_pretrained.py \
	notebooks/00_welcome.ipynb notebooks/06_pipeline.ipynb notebooks/09_pretrained.ipynb
COLAB_HOME   := $(CURDIR)/build/colab

$(COLAB_STAMP): constraints-colab.txt
	@$(COLAB_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null || \
		{ echo "make test-colab needs Python 3.13, Colab's: install it (pyenv install 3.13) or set COLAB_PYTHON"; exit 1; }
	rm -rf $(COLAB_VENV)
	$(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(COLAB_BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-colab.txt \
		$$($(COLAB_BIN)/python .ci/colab_runtime.py image)
	@touch $@

test-colab: $(COLAB_STAMP)
	$(COLAB_BIN)/python .ci/colab_runtime.py cell
	$(COLAB_BIN)/python .ci/colab_runtime.py check
	rm -rf $(COLAB_HOME) && mkdir -p $(COLAB_HOME)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LLMIMG_PROFILE=smoke \
		LLMIMG_CACHE_DIR=$(COLAB_HOME)/cache LLMIMG_EXPERIMENTS_DIR=$(COLAB_HOME)/experiments \
		$(COLAB_BIN)/python -m pytest $(COLAB_TESTS) -n $(TEST_WORKERS) --dist loadfile --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider
# --- end of Colab's block ------------------------------------------------------------------------------------

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
