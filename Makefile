# nngp_ppl: `make demo` and `make test` work on a fresh clone; they build .venv themselves.
# PYTHON=/path/to/python3.12 overrides the interpreter search.
SHELL := /bin/bash
VENV := .venv
VPY := $(VENV)/bin/python

# A Python >= 3.12: on PATH first (each candidate is asked, since pyenv shims can exist
# without working), then pyenv's installed versions directly.
PYTHON ?= $(shell for c in python3.13 python3.12 python3 python; do \
    p=$$(command -v $$c 2>/dev/null) || continue; \
    $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; exit 0; }; \
  done; \
  for p in $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -Vr); do \
    $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; exit 0; }; \
  done)

.PHONY: all venv test test-fast lint demo bench clean

all: test

$(VENV)/.installed: pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "No Python >= 3.12 found on PATH or under pyenv; install one or run make PYTHON=/path/to/python3.12"; exit 1; fi
	@echo "Creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@# uv installs the same versions as pip in about half the time (20 against 37 s on a
	@# 2-core machine), most of pip's being its own work, not downloads. --compile-bytecode:
	@# where PYTHONDONTWRITEBYTECODE is set (as on these machines) no process would ever
	@# cache a compiled module, and each would compile jax, scipy and the rest again (~6 s).
	@# Plain pip if uv cannot be installed.
	if $(VPY) -m pip install -q uv; then \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(VPY) -e ".[test]"; \
	else \
	  $(VPY) -m pip install -q -e ".[test]"; \
	fi
	@touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .

# Everything (what CI runs).
# pytest-xdist: two workers; tests/conftest.py puts each module's tests in one group (module
# fixtures stay shared) except slow tests that share nothing, which go alone, and hands the
# groups out longest first, so that both workers finish together.
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder
# The package's compiled modules, brought up to date first (compileall skips those that are):
# where PYTHONDONTWRITEBYTECODE is set, each worker and each CLI process the tests start
# would otherwise compile nngp_ppl from source again (0.2-0.3 s a process).
PYC := $(VPY) -m compileall -q nngp_ppl
test: venv lint
	@$(PYC)
	$(VPY) -m pytest -q $(XDIST)

# Everything but the slow tier (@pytest.mark.slow: statistical runs and pipelines of more
# than ~20 s each): the loop for an edit.
test-fast: venv lint
	@$(PYC)
	$(VPY) -m pytest -q $(XDIST) -m "not slow"

demo: venv
	$(VENV)/bin/nngp-ppl demo

# Every benchmark script, in quick mode where it has one (--quick); each prints its ratios.
bench: venv
	@for f in benchmarks/*.py; do \
	  q=$$(grep -q -e '"--quick"' $$f && echo --quick); \
	  echo "== $(VPY) $$f $$q"; \
	  $(VPY) $$f $$q || exit 1; echo; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
