# splitrl: two commands on a fresh machine (`make demo`, `make test`), plus `make bench` and `make lint`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint profile clean fuzz slow-checks

$(STAMP): pyproject.toml setup.py splitrl/codecs/_kernels.c $(wildcard splitrl/codecs/csrc/*) splitrl/agents/baselines/_backlog.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,scale]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m splitrl demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Coverage-guided fuzzing of the codec decoder and the server's parser (fuzz/fuzz_codec.py).
FUZZ_SECONDS ?= 600
FUZZ_RUNS ?= 200000
FUZZ_DEPS := $(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install -q -e ".[fuzz]"

fuzz: $(STAMP)
	$(FUZZ_DEPS)
	fuzz/run.sh compiled $(BIN)/python -max_total_time=$(FUZZ_SECONDS)

# Checks too slow for `make test`: a bounded fuzzing round on both codec paths, and what adapting
# is worth in the default scenario on the evaluation's 40 episodes (tests/test_scenarios.py).
slow-checks: $(STAMP)
	SPLITRL_SLOW_CHECKS=1 $(BIN)/python -m pytest -q tests/test_scenarios.py -k adapting_is_worth
	$(FUZZ_DEPS)
	fuzz/run.sh compiled $(BIN)/python -runs=$(FUZZ_RUNS) -seed=1
	fuzz/run.sh numpy $(BIN)/python -runs=$(FUZZ_RUNS) -seed=1

profile: $(STAMP)
	# retrains the network and rebuilds the shipped profile in place (needs dataset-fashion-mnist)
	$(BIN)/splitrl profile build --train --out splitrl/profiles/data \
		--weights-out splitrl/models/weights --model-name canvas_eenet

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
