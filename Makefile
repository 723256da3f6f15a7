# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BACKENDS := tensorflow jax torch
PYTEST_ARGS ?=

# Quiet TensorFlow's start-up chatter about missing GPUs.
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test lint install clean

$(INSTALLED): requirements/dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python examples/reverse_demo.py

lint: $(INSTALLED)
	$(BIN)/ruff check keras_tfm tests examples
	$(BIN)/ruff format --check keras_tfm tests examples

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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
