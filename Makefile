# mlc developer entry points. `make example` and `make test` are the README's two commands:
# each creates .venv and installs mlc and its dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mlc-installed

.PHONY: setup example test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# The main job on the bundled example: compile for this machine, run, check against onnxruntime.
example: setup
	$(BIN)/mlc compile examples/convnet.onnx --target x86 -o build/example --force
	$(BIN)/mlc run build/example --check examples/convnet.onnx --dim N=4
	$(BIN)/mlc bench build/example --compare examples/convnet.onnx --seconds 1

test: setup
	$(BIN)/python -m pytest tests -q

test-fast: setup
	$(BIN)/python -m pytest tests -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/loader_overhead.py

lint: setup
	$(BIN)/ruff check compiler tests benchmarks examples
	$(BIN)/ruff format --check compiler tests benchmarks examples

clean:
	rm -rf build .pytest_cache
