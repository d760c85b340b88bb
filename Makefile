# Three commands from a fresh clone, each setting up .venv first when it is missing:
#   make demo      train the shipped demo scene (about 2 minutes on 2 CPU cores), evaluate
#                  it, write an orbit GIF; ARGS="--dataset-path ..." trains another scene
#   make test      lint, then the default test tier: every contract on tiny runs (minutes)
#   make test-all  lint, then every test: quality floors on real scenes, long schedules,
#                  the packaging check, all hypothesis examples (what CI runs)
# Make because it is on every Unix machine and knows that the environment has to exist
# before either command runs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo
ARGS ?=

.PHONY: demo test test-all

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	rm -rf $(RUN)
	$(BIN)/tensorf-train demo --run-dir $(RUN) $(ARGS)
	$(BIN)/tensorf-render --run-dir $(RUN) --out $(RUN)/orbit.gif --frames 40 --no-depth
	@echo "demo done: $(RUN)/metrics.json (test PSNR), $(RUN)/renders/ (test views),"\
	      "$(RUN)/orbit.gif (video); tensorboard --logdir $(RUN)/tensorboard"

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

test-all: $(VENV)/.installed
	$(BIN)/ruff check .
	TENSORF_TEST_TIER=all $(BIN)/python -m pytest -q --durations=25
