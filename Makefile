# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BACKENDS := tensorflow jax torch
# Two workers per backend (pytest-xdist): the CI machine has 2 cores.
PYTEST_ARGS ?= -n 2

# Quiet TensorFlow's start-up chatter about missing GPUs.
export TF_CPP_MIN_LOG_LEVEL := 2
# MkDocs prints a banner about its successor on every build.
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint install clean docs serve docs-shot

$(INSTALLED): requirements/dev.txt requirements/docs.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python examples/translate.py

lint: $(INSTALLED)
	$(BIN)/ruff check keras_tfm tests examples docs/_scripts benchmarks
	$(BIN)/ruff format --check keras_tfm tests examples docs/_scripts benchmarks

# The whole suite once per backend, each in its own process; fails if any
# backend fails, after running all three.
test: lint
	@status=0; \
	for backend in $(BACKENDS); do \
		echo "==== KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q $(PYTEST_ARGS) \
			|| status=1; \
	done; \
	exit $$status

# The documentation site, built strictly (a broken link or a missing API
# entry fails). Figures are redrawn with the library on every build.
docs: $(INSTALLED)
	rm -rf docs/images/generated
	$(BIN)/mkdocs build --strict

serve: $(INSTALLED)
	$(BIN)/mkdocs serve

# Screenshots of the built site in headless Chromium, for a person to look at.
CHROMIUM_FLAGS := --headless --no-sandbox --disable-gpu --disable-quic \
	--no-first-run --disable-background-networking --disable-component-update \
	--disable-sync --hide-scrollbars --window-size=1280,1800
docs-shot: docs
	command -v chromium >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends chromium)
	mkdir -p site-shots
	for page in index concepts/masking/index; do \
		chromium $(CHROMIUM_FLAGS) --user-data-dir=$$(mktemp -d) \
			--screenshot=site-shots/$$(echo $$page | tr / _).png \
			file://$(CURDIR)/site/$$page.html; \
	done
	ls site-shots

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info site site-shots \
		docs/images/generated
