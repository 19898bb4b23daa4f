# The README's two commands. Both create .venv with plain pip (torch installs from this
# machine's disk; uv/poetry would download gigabytes) and reuse it when it is up to date.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medrec-installed

.PHONY: demo test install

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c .ci/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m medrec.finetune --config configs/chest_xray.yaml

test: $(STAMP)
	$(PY) -m pytest -q
