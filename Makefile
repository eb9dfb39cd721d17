# `make demo` and `make test` create .venv when needed (reused while requirements.txt and
# setup.py are unchanged), install avssl into it, and run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp's name changes with the pinned requirements, so editing them reinstalls.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt setup.py | sha1sum | cut -c1-12)

.PHONY: install test test-fast demo bench lint clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

test: $(STAMP)
	$(PY) -m pytest tests

# the inner loop: everything but the tests marked slow (processes, end-to-end runs)
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/avssl demo

bench: $(STAMP)
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
