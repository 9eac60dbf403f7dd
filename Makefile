# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install lymph into it (torch pinned to the CPU wheel first, so pip does
# not pull a multi-GB CUDA build; pyproject.toml keeps the open range for real users).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.lymph-installed
DEMO   ?= demo_out

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/lymph synth --out $(DEMO)/slides --tumor 3 --normal 2 --size 12000x9000 --seed 0

clean:
	rm -rf $(VENV) $(DEMO) bench_out .pytest_cache .ruff_cache *.egg-info
