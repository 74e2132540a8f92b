# Set-up is idempotent: the virtual environment is (re)built only when setup.cfg or pyproject.toml change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The robot install as JetPack 6 runs it: Python 3.10, the package with ONNX Runtime (CPU), the policy server
# and RemotePolicy ([serve]), python-can for the Piper ([piper]) and its test tools, no torch, transformers or onnx. `make test` runs the suite in it too (what needs those skips by name), then
# the same profile from a built wheel, outside the source tree (tools/check_robot_wheel.py: flash, config
# check, Policy.act, the daemon on the emulated arm).
PYTHON310 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10))
ROBOT_VENV ?= .venv-robot310
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test quick slow-test bench gpu-check clean-venv

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# openpi's websocket client, a test oracle (tests/xvla_edge/serve/test_openpi_client.py): without its declared
	# dependencies, whose numpy<2 pin the [dev] stack cannot take; its websocket client imports only msgpack,
	# numpy, websockets and typing_extensions, all in [dev]
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps openpi-client==0.1.2
	# Feetech's servo SDK, the oracle of the Feetech driver's packets (tests/drivers/feetech/test_feetech_protocol.py):
	# test-only, pure Python, its one dependency (pyserial) already in the base
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps feetech-servo-sdk==1.0.0
	# AgileX's Piper SDK, a test oracle (tests/drivers/piper/test_piper_sdk_oracle.py): its one dependency,
	# python-can, comes with the [piper] extra
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps piper_sdk==0.6.2
	touch $@

$(ROBOT_VENV)/.installed: setup.cfg pyproject.toml
	@test -n "$(PYTHON310)" || { echo "make: no python3.10 found (set PYTHON310=/path/to/python3.10)"; exit 1; }
	$(PYTHON310) -m venv $(ROBOT_VENV)
	$(ROBOT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[onnxruntime,serve,piper,test]'
	$(ROBOT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps feetech-servo-sdk==1.0.0 \
		piper_sdk==0.6.2
	touch $@

demo: $(VENV)/.installed
	$(BIN)/xvla-edge demo

test: $(VENV)/.installed $(ROBOT_VENV)/.installed
	$(BIN)/python -m pytest -q
	$(ROBOT_VENV)/bin/python -m pytest -q
	$(BIN)/python tools/check_robot_wheel.py --python $(PYTHON310)

# The edit loop's tier: the suite without what starts processes or servers, exports a model, or is slow (tests/support/tiers.py).
quick: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not server and not subprocess and not model and not slow"

slow-test: $(VENV)/.installed
	XVLA_SLOW=1 $(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed
	$(BIN)/xvla-edge bench --size tiny small

# The GPU paths on the NVIDIA machine at hand, from a clean checkout, with the machine's own python3: builds its
# environment from the index (<= 5 min), runs every GPU step with its own timeout (<= 8 min), writes
# benchmarks/results/<arch>-<gpu>/ (docs/benchmarks.md#on-a-gpu-make-gpu-check). Without a GPU: the wiring only.
# A Jetson: make gpu-check GPU_CHECK_ARGS=--jetson
gpu-check:
	$(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV) $(ROBOT_VENV)
