# mlc developer entry points. `make example` and `make test` are the README's two commands:
# each creates .venv and installs mlc and its dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mlc-installed

.PHONY: setup setup-cross example test test-fast bench bench-quick conformance corpus corpus-models lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# ARM cross-compilation and emulation (about 10 s with apt). Best effort: where it cannot be
# installed (not root, no apt-get, offline) the ARM tests skip and say why.
CROSS_TOOLS := aarch64-linux-gnu-g++ qemu-aarch64
setup-cross:
	@missing=""; for t in $(CROSS_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing g++-aarch64-linux-gnu and qemu-user for the ARM tests (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      g++-aarch64-linux-gnu qemu-user >/dev/null) || echo "note: apt-get failed; ARM tests will skip"; \
	  else \
	    echo "note:$$missing missing and cannot be installed here (needs root and apt-get); ARM tests will skip"; \
	  fi; \
	fi

# The main job on the bundled example: compile for this machine, run, check against onnxruntime.
example: setup
	$(BIN)/mlc compile examples/convnet.onnx --target x86 -o build/example --force
	$(BIN)/mlc run build/example --check examples/convnet.onnx --dim N=4
	$(BIN)/mlc bench build/example --compare examples/convnet.onnx --seconds 1

test: setup setup-cross
	$(BIN)/python -m pytest tests -q

test-fast: setup
	$(BIN)/python -m pytest tests -q -m "not slow"

# The five benchmark models against onnxruntime: untuned, then tuned for TUNE_MINUTES each
# (about 2 hours in all at the default). Writes benchmarks/RESULTS.md and build/bench/results.json.
TUNE_MINUTES ?= 20
# The ONNX backend node tests (generated into build/conformance-data) through onnxruntime and
# mlc, each case in its own process: writes conformance/REPORT.md and conformance/results.json.
conformance: setup
	$(BIN)/python -m conformance.run --jobs 2

# The real-model corpus (corpus/): build the models once into build/corpus/models (a venv of
# its own with torch, transformers, timm, TensorFlow, Paddle: ~8 GB, about 20 minutes), then
# compile, check and time each with mlc against onnxruntime: writes corpus/REPORT.md and
# corpus/results.json (about 40 minutes on 2 cores).
CORPUS_VENV := build/corpus/venv
CORPUS_PADDLE := build/corpus/venv-paddle
$(CORPUS_VENV)/.installed: corpus/requirements.txt
	$(PYTHON) -m venv $(CORPUS_VENV)
	$(CORPUS_VENV)/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(CORPUS_VENV)/bin/pip install -q --disable-pip-version-check -r corpus/requirements.txt
	$(PYTHON) -m venv $(CORPUS_PADDLE)
	$(CORPUS_PADDLE)/bin/pip install -q --disable-pip-version-check paddlepaddle==3.3.1 \
	  paddle2onnx==2.1.0 packaging==26.4 || echo "note: Paddle did not install; its models are skipped"
	touch $@

corpus-models: $(CORPUS_VENV)/.installed
	$(CORPUS_VENV)/bin/python corpus/build.py

corpus: setup corpus-models
	$(BIN)/python -m corpus.run

bench: setup
	$(BIN)/python benchmarks/loader_overhead.py
	$(BIN)/python benchmarks/run.py --tune-minutes $(TUNE_MINUTES)

# Untuned, small models only (about a minute).
bench-quick: setup
	$(BIN)/python benchmarks/run.py --models mlp,bert-mini,mobilenetv2 --tune-minutes 0 \
	  --seconds 5 --results build/bench/RESULTS-quick.md

lint: setup
	$(BIN)/ruff check compiler tests benchmarks examples corpus
	$(BIN)/ruff format --check compiler tests benchmarks examples corpus

clean:
	rm -rf build .pytest_cache
