# The two commands a new user needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench test-real-vllm test-compat clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m nemo_gym.demo

# Adapter cost per request against a fast local upstream (about 2 minutes); writes docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m nemo_gym.bench

# Opt-in tier against a real `vllm serve` (CPU, tiny model; first run builds a ~6 GB venv). Not part of `make test`.
REAL_VLLM_DIR ?= ../shared/real_vllm
# Ports of the two vLLM servers (set others if another checkout's tier uses these).
REAL_VLLM_PORT ?= 18300
REAL_VLLM_R1_PORT ?= 18301
test-real-vllm: $(STAMP)
	bash $(REAL_VLLM_DIR)/start_real_vllm.sh $(REAL_VLLM_PORT) --max-model-len 1024
	bash $(REAL_VLLM_DIR)/start_real_vllm.sh $(REAL_VLLM_R1_PORT) --reasoning-parser deepseek_r1
	REAL_VLLM_URL=http://127.0.0.1:$(REAL_VLLM_PORT) REAL_VLLM_R1_URL=http://127.0.0.1:$(REAL_VLLM_R1_PORT) \
		$(BIN)/python -m pytest -m real_vllm tests/real_vllm -v -s; status=$$?; \
		bash $(REAL_VLLM_DIR)/start_real_vllm.sh stop $(REAL_VLLM_PORT); bash $(REAL_VLLM_DIR)/start_real_vllm.sh stop $(REAL_VLLM_R1_PORT); exit $$status

# Opt-in tier: every server and environments/ bundle of NeMo Gym 0.7.0 (downloaded into .compat_cache/,
# never committed) built or loaded, a set run end to end against the simulator, and their own tests
# run, on our framework.
# Report: .compat_cache/report.json. Not part of `make test`.
COMPAT_CACHE := .compat_cache
test-compat: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	$(BIN)/python -m tests.compat.harness prepare
	$(BIN)/python -m pytest -m ray tests/test_ray.py tests/trainers/test_ray_trainer.py -v
	NG_COMPAT_EXTRA_ROOTS=$(CURDIR)/$(COMPAT_CACHE)/wheel $(COMPAT_CACHE)/venv/bin/python -m pytest -m compat tests/compat -v -rA $(COMPAT_ARGS)

clean:
	rm -rf $(VENV) results $(COMPAT_CACHE)
