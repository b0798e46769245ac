# Two commands: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch===2.13.0
TORCHVISION_SPEC ?= torchvision==0.28.0
MODELS_DIR ?= models
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.pixelpool-base
TORCH_PIN := $(VENV)/.pixelpool-torch-pin
DEV_STAMP := $(VENV)/.pixelpool-dev

.PHONY: run test lint bench clean

# Recreate the venv when it is missing or its interpreter no longer runs.
$(VENV)/.ok:
	@$(PY) -c "" 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV_FLAGS) $(VENV); }
	@$(PY) -c "import sys; assert sys.version_info >= (3, 11), 'pixelpool needs Python >= 3.11'"
	@touch $@

# A torch that is already in the venv (e.g. your CUDA build) is kept as it is: it is
# pinned while the rest installs, so torchvision (which spandrel needs) must match it
# rather than replace it. `===` takes the registry's build, never a local +cpu wheel.
$(BASE_STAMP): pyproject.toml $(VENV)/.ok
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)"
	@$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(TORCH_PIN)
	$(PY) -m pip install -c $(TORCH_PIN) -e .
	@touch $@

# The status page tests drive a real Chromium: playwright's own (with the system
# libraries it needs, when root), else the system package. Neither is fatal here:
# the tests then fail and say how to get one.
$(DEV_STAMP): $(BASE_STAMP)
	$(PY) -m pip install -c $(TORCH_PIN) -e ".[dev]"
	@$(PY) -m playwright install $$([ "$$(id -u)" = 0 ] && echo --with-deps) chromium \
	  || command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get update -q && apt-get install -y -q chromium; } \
	  || echo "warning: no Chromium found or installed; the status page tests will fail"
	@touch $@

run: $(BASE_STAMP)
	@[ -n "$$(ls -A $(MODELS_DIR) 2>/dev/null)" ] || $(VENV)/bin/pixelpool demo --models-dir $(MODELS_DIR)
	$(VENV)/bin/pixelpool serve --models-dir $(MODELS_DIR)

test: $(DEV_STAMP)
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(DEV_STAMP)
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
