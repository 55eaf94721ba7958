# fewstep: every target sets itself up. torch is pinned through constraints.txt on every pip call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet -c constraints.txt
STAMP  := $(VENV)/.installed
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup datasets demo test bench-teacher clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

datasets:
	@sh scripts/install_datasets.sh

setup: $(STAMP) datasets

demo: setup
	$(BIN)/fewstep demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .cache
