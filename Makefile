# Two entry points do all the set-up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.adaptkit-installed

.PHONY: install demo test test-fast lint adapters golden bench clean

# The tested stack (requirements/stack.txt); mmpose goes in with --no-deps because its
# declared chumpy dependency does not build. No source builds: about two minutes.
$(STAMP): requirements/stack.txt requirements/dev.txt requirements/optional.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -r requirements/stack.txt -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps mmpose==1.1.0
	$(BIN)/python -m pip install --quiet -r requirements/optional.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

# The main job on the built-in default: SCTNet-B into mmpose's stock HRNet-W32 config.
demo: $(STAMP)
	$(BIN)/python examples/sctnet_into_hrnet.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check adaptkit tests benchmarks examples adapters
	$(BIN)/mypy

# Regenerate the committed fragments under adapters/.
adapters: $(STAMP)
	$(BIN)/python adapters/regenerate.py

# Rewrite the golden CLI outputs under tests/golden/ (then review the diff).
golden: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_golden.py --overwrite-golden

# Both benchmarks, on this machine's CPU (or the GPU when there is one): results in benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python benchmarks/probe_speed.py
	$(BIN)/python benchmarks/adapter_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
