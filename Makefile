# The two commands a new user needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench bench-instructions test-real-vllm test-compat clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pyflakes conftest.py nemo_gym responses_api_models responses_api_agents resources_servers environment_servers examples tests

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m nemo_gym.demo

# Adapter cost per request against a fast local upstream (a few minutes); writes docs/benchmarks.md.
# A subset: make bench BENCH_ARGS="--scenarios token_context --output docs/benchmarks_token_context.md"
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m nemo_gym.bench $(BENCH_ARGS)

# The adapter's own instructions per request under valgrind's callgrind (needs valgrind; several minutes):
# the same on every run, so one run per side compares two checkouts, e.g.
# make bench-instructions INSTRUCTIONS_ARGS="--checkout ../base --checkout ."
INSTRUCTIONS_ARGS ?=
bench-instructions: $(STAMP)
	$(BIN)/python -m nemo_gym.bench.instructions $(INSTRUCTIONS_ARGS)

# Opt-in tier against a real `vllm serve` (CPU, tiny models; first run builds a ~6 GB venv). Not part of `make test`.
# First the tiny ChatML model on two servers, then each model family of $(REAL_VLLM_DIR)/families (Qwen3,
# Llama 3.1, Mistral), one at a time on REAL_VLLM_FAMILY_PORT, started and stopped by the tests themselves
# (REAL_VLLM_FAMILIES picks some, comma-separated).
REAL_VLLM_DIR ?= ../shared/real_vllm
# Ports of the vLLM servers (set others if another checkout's tier uses these).
REAL_VLLM_PORT ?= 18300
REAL_VLLM_R1_PORT ?= 18301
REAL_VLLM_FAMILY_PORT ?= 18310
REAL_VLLM_FAMILIES ?= qwen3,llama31,mistral
test-real-vllm: $(STAMP)
	bash $(REAL_VLLM_DIR)/start_real_vllm.sh $(REAL_VLLM_PORT) --max-model-len 1024
	bash $(REAL_VLLM_DIR)/start_real_vllm.sh $(REAL_VLLM_R1_PORT) --reasoning-parser deepseek_r1
	REAL_VLLM_URL=http://127.0.0.1:$(REAL_VLLM_PORT) REAL_VLLM_R1_URL=http://127.0.0.1:$(REAL_VLLM_R1_PORT) \
		$(BIN)/python -m pytest -m real_vllm tests/real_vllm --ignore=tests/real_vllm/test_real_vllm_families.py -v -s; \
		status=$$?; bash $(REAL_VLLM_DIR)/start_real_vllm.sh stop $(REAL_VLLM_PORT); \
		bash $(REAL_VLLM_DIR)/start_real_vllm.sh stop $(REAL_VLLM_R1_PORT); \
	REAL_VLLM_DIR=$(abspath $(REAL_VLLM_DIR)) REAL_VLLM_FAMILY_PORT=$(REAL_VLLM_FAMILY_PORT) \
		REAL_VLLM_FAMILIES=$(REAL_VLLM_FAMILIES) \
		$(BIN)/python -m pytest -m real_vllm tests/real_vllm/test_real_vllm_families.py -v -s || status=1; \
		exit $$status

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
