# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vecstore-installed
DEMO_DIR ?= demo-data
DEMO_STORE ?= $(DEMO_DIR)/store

.PHONY: demo test install lint clean

# torch/torchvision pinned here only because these builds lie on this machine's disk
# (pip takes them from there); pyproject.toml declares plain ranges.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vecstore --store $(DEMO_STORE) demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info
