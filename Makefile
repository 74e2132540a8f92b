# Set-up is idempotent: the virtual environment is (re)built only when setup.cfg or pyproject.toml change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test slow-test bench clean-venv

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/xvla-edge demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

slow-test: $(VENV)/.installed
	XVLA_SLOW=1 $(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed
	$(BIN)/xvla-edge bench --size tiny small

clean-venv:
	rm -rf $(VENV)
