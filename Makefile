# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BACKENDS := tensorflow jax torch
# Two workers per backend (pytest-xdist): the CI machine has 2 cores.
PYTEST_ARGS ?= -n 2
# Other Pythons, for the floors' check (the lowest supported Python) and the
# packaging check: pyenv's where the machine has them, else from the PATH.
python_version = $(firstword \
	$(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)) python$(1))
PYTHON_MIN ?= $(call python_version,3.10)
PYTHON_PACKAGE ?= $(call python_version,3.12)
MIN_VENV := .venv-min
# The floors' check skips what needs the docs, the examples' extra libraries
# or torch (whose floor is checked by hand: requirements/min.txt says how).
MIN_TESTS := tests --ignore=tests/test_docs.py --ignore=tests/test_examples.py \
	--ignore=tests/test_benchmarks.py --ignore=tests/test_resume.py

# Quiet TensorFlow's start-up chatter about missing GPUs.
export TF_CPP_MIN_LOG_LEVEL := 2
# MkDocs prints a banner about its successor on every build.
export NO_MKDOCS_2_WARNING := 1
# The tests' programs are tiny and XLA spends their time compiling: LLVM's
# cheapest optimisation level took a fifth off the JAX suite (TensorFlow's
# was unchanged). Tests only: a user's programs keep XLA's defaults.
test test-min: export XLA_FLAGS := --xla_backend_optimization_level=0

.PHONY: demo test test-min test-package lint install clean docs serve \
	docs-shot

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

# The fast tests at the lowest versions pyproject.toml allows (keras,
# keras-hub, TensorFlow, JAX, NumPy), on Python 3.10, in a second virtual
# environment, on JAX and TensorFlow.
$(MIN_VENV)/.installed: requirements/min.txt pyproject.toml
	test -x $(MIN_VENV)/bin/python || $(PYTHON_MIN) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet -r requirements/min.txt
	$(MIN_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

test-min: $(MIN_VENV)/.installed
	@status=0; \
	for backend in jax tensorflow; do \
		echo "==== floors, KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(MIN_VENV)/bin/python -m pytest -q \
			$(PYTEST_ARGS) -m "not slow" -p no:cacheprovider $(MIN_TESTS) \
			|| status=1; \
	done; \
	exit $$status

# Builds the sdist and wheel, installs the wheel with the [jax] extra into a
# fresh environment (Python 3.12) and runs the README's quick start there.
test-package: $(INSTALLED)
	$(BIN)/python -m tests.packaging.check --python $(PYTHON_PACKAGE) \
		--backend jax

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
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache build *.egg-info site \
		site-shots docs/images/generated
