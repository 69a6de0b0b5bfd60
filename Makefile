# Set-up and entry points. `make test` and `make demo` work on a fresh machine: each creates the
# virtual environment on first use and installs pstroke with the pinned versions in constraints.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
STAMP := $(VENV)/.installed

.PHONY: install test demo clean-venv

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m pstroke.demo --workdir=$(WORKDIR)

clean-venv:
	rm -rf $(VENV)
