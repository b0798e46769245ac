# Two commands: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_INDEX ?=
TORCH_SPEC ?= $(if $(TORCH_INDEX),torch==2.13.0,torch===2.13.0)
TORCHVISION_SPEC ?= torchvision==0.28.0
LOCK ?= requirements/lock.txt
MODELS_DIR ?= models
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.pixelpool-base
TORCH_PIN := $(VENV)/.pixelpool-torch-pin
DEV_STAMP := $(VENV)/.pixelpool-dev

LOCK_FLAGS := $(if $(LOCK),-c $(LOCK))
TORCH_INDEX_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

.PHONY: run test lint bench lock upgrade clean

# Recreate the venv when it is missing or its interpreter no longer runs.
$(VENV)/.ok:
	@$(PY) -c "" 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV_FLAGS) $(VENV); }
	@$(PY) -c "import sys; assert sys.version_info >= (3, 11), 'pixelpool needs Python >= 3.11'"
	@touch $@

# A torch that is already in the venv (e.g. your CUDA build) is kept as it is: it is
# pinned while the rest installs, so torchvision (which spandrel needs) must match it
# rather than replace it. `===` takes the registry's build, never a local +cpu wheel;
# TORCH_INDEX (a PyTorch wheel index: CPU-only or one CUDA version) takes that index's.
# Everything else installs at the exact versions of $(LOCK) (LOCK= installs unpinned).
$(BASE_STAMP): pyproject.toml $(LOCK) $(VENV)/.ok
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_INDEX_FLAGS) "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)"
	@$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(TORCH_PIN)
	$(PY) -m pip install -c $(TORCH_PIN) $(LOCK_FLAGS) -e .
	@touch $@

# The status page tests drive a real Chromium: playwright's own (with the system
# libraries it needs, when root), else the system package. Neither is fatal here:
# the tests then fail and say how to get one.
$(DEV_STAMP): $(BASE_STAMP)
	$(PY) -m pip install -c $(TORCH_PIN) $(LOCK_FLAGS) -e ".[dev]"
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

# `make upgrade`: every dependency to its newest allowed version; `make lock`: only add
# or fix what pyproject.toml changed, keeping the other pins. Either rewrites $(LOCK) for
# every platform (run on a schedule; the next `make` installs it). torch, torchvision
# and their CUDA libraries are left out: they follow TORCH_SPEC, or the torch already in
# the venv, so a CUDA build is never replaced by the lock's. Only uv is installed first:
# a lock that no longer fits pyproject.toml must not stop its own repair.
lock upgrade: $(VENV)/.ok
	@$(VENV)/bin/uv --version >/dev/null 2>&1 || $(PY) -m pip install $(LOCK_FLAGS) uv
	@mkdir -p $(dir $(LOCK))
	@if [ -f $(LOCK) ]; then cp $(LOCK) $(LOCK).new; else rm -f $(LOCK).new; fi
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		$(if $(filter upgrade,$@),--upgrade) --no-annotate --quiet \
		--custom-compile-command "make upgrade" -o $(LOCK).new
	awk '!/^(torch==|torchvision==|triton==|cuda-|nvidia-)/ || /^nvidia-ml-py==/' $(LOCK).new > $(LOCK)
	@rm -f $(LOCK).new

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
