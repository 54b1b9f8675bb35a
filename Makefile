# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vecstore-installed
# Label Studio's SDK, for the tests that read vecstore's tasks with Label Studio's own code; a
# separate environment because it pins numpy below the version vecstore runs with
LS_VENV ?= .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
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

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio-sdk>=2.1,<3'
	touch $(LS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vecstore --store $(DEMO_STORE) demo --out $(DEMO_DIR)

test: $(STAMP) $(LS_STAMP)
	VECSTORE_LABEL_STUDIO_PYTHON=$(LS_VENV)/bin/python $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info
