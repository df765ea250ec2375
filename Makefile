# Two commands: `make demo` (the main job) and `make test` (the test suite).
# The Makefile finds a Python >= 3.12 by itself: python3.12/python3.13 on PATH, else pyenv's versions.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RESULTS ?= results

FIND_PYTHON := for p in python3.12 python3.13; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then command -v $$p; exit 0; fi; \
	done; \
	root=$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv); \
	for d in $$root/versions/3.12* $$root/versions/3.13*; do \
	  if [ -x $$d/bin/python3 ]; then echo $$d/bin/python3; exit 0; fi; \
	done

.PHONY: venv demo test test-full lint format bench clean

$(VENV)/.installed: pyproject.toml constraints.txt setup.py lse_material/_kernel.c
	@base=$$($(FIND_PYTHON)); \
	if [ -z "$$base" ]; then echo "No Python >= 3.12 found (tried python3.12, python3.13, pyenv versions). Install one." >&2; exit 1; fi; \
	echo "Using $$base"; \
	[ -x $(PY) ] || $$base -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[fem,dev]'
	@# io4dolfinx (checkpoints) declares fenics-dolfinx, which the DOLFINx wheel does not provide
	$(PY) -m pip install -q --no-deps -c constraints.txt io4dolfinx fenicsx-compat
	touch $@

venv: $(VENV)/.installed

CLI := $(VENV)/bin/lse-material

MPIRUN := $(VENV)/bin/mpirun

# The main job: train the mechanochemical law if its model file is missing, then run the
# spinodal phase-transformation case on 2 MPI ranks; also a shortened 1-D well-discovery study.
# One torch thread for the training: its batches are small, and on this 2-core machine 2
# threads took 319 s against 190 s for one (a fresh clone's make demo; README).
demo: venv
	@[ -f $(RESULTS)/mechanochemical/model.safetensors ] || \
	  $(CLI) train mechanochemical --out $(RESULTS)/mechanochemical --overwrite --threads 1
	$(CLI) inspect $(RESULTS)/mechanochemical/model.safetensors
	$(MPIRUN) -n 2 $(CLI) simulate spinodal --model $(RESULTS)/mechanochemical/model.safetensors \
	  --out $(RESULTS)/spinodal --mesh 48 --t-end 0.3
	$(CLI) fit-1d --seeds 3 --epochs 6000 --finetune-epochs 500 --polish-epochs 1000 --out $(RESULTS)/fit-1d
	@echo
	@echo "Results:"
	@echo "  mechanochemical law: $(RESULTS)/mechanochemical/ (model.safetensors, summary.json, parity.png, extrapolation.png)"
	@echo "  spinodal FE case:    $(RESULTS)/spinodal/ (fields.bp + diagnostics.bp for ParaView, summary.json, *.png)"
	@echo "  1-D study:           $(RESULTS)/fit-1d/ (summary.json, *.png, one model file per function)"

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra tests

test-full: venv
	LSE_FULL=1 $(PY) -m pytest -q -ra tests

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: venv
	$(CLI) bench fit-1d --out $(RESULTS)/bench/fit-1d
	@[ -f $(RESULTS)/mechanochemical/model.safetensors ] || \
	  $(CLI) train mechanochemical --out $(RESULTS)/mechanochemical --overwrite --threads 1
	$(CLI) bench law --model $(RESULTS)/mechanochemical/model.safetensors --out $(RESULTS)/bench/law
	$(CLI) bench bvp --model $(RESULTS)/mechanochemical/model.safetensors --out $(RESULTS)/bench/bvp
	$(CLI) bench spinodal --model $(RESULTS)/mechanochemical/model.safetensors --out $(RESULTS)/bench/spinodal
	$(CLI) bench energy-objective --model $(RESULTS)/mechanochemical/model.safetensors --out $(RESULTS)/bench/energy-objective

clean:
	rm -rf $(VENV) $(RESULTS) *.egg-info .pytest_cache .ruff_cache
