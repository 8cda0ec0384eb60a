# make demo | make test | make bench — each creates .venv and installs what it needs first.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# apt-get needs root: as root run it directly, otherwise through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What `megalang demo` imports beyond the core dependencies (pyproject.toml says why).
DEMO_EXTRAS ?= demo
# Extras the test suite imports; later stages add theirs here.
EXTRAS ?= dev,monitor,ray,datatest,classifier,eval,pretrained,finetune,privacy,security,release,onnx,gguf,federated,s3

.PHONY: install install-demo demo demo-check test bench clean

# Two stamps: .demo-installed (torch, megalang, DEMO_EXTRAS) and .installed (that, EXTRAS and Chromium), so
# `make demo` installs only what the demo imports and a later `make test` adds the rest.
install-demo: $(VENV)/.demo-installed
install: $(VENV)/.installed

$(VENV)/.demo-installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.installed: $(VENV)/.demo-installed requirements/textattack.txt
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# TextAttack (`eval robustness --attack`, the `robustness` extra) without its declared dependencies: its flair
	# needs transformers<5 from flair 0.12 on; 0.11.3 imports under 5. What both import comes from
	# requirements/textattack.txt, with the versions already installed here held (torch above all).
	$(BIN)/pip install -q --no-deps "textattack==0.3.11" "flair==0.11.3"
	$(BIN)/pip freeze | grep -iE '^(torch|transformers|tokenizers|sentencepiece|numpy|httpx|click)==' > $(VENV)/held.txt
	$(BIN)/pip install -q -c $(VENV)/held.txt -r requirements/textattack.txt
	# Headless Chromium renders the run report in tests/monitor/test_report.py (Debian package `chromium`).
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
		|| echo "warning: chromium could not be installed; the report browser test will be skipped"
	touch $@

demo: install-demo
	$(BIN)/megalang demo --out runs/demo

# For CI: the demo on what `make demo` installs and nothing more (its own venv), 2 steps of the debug preset.
demo-check:
	$(MAKE) VENV=.venv-demo install-demo
	.venv-demo/bin/megalang demo --out runs/demo-check --max-steps 2 --preset debug

test: install
	$(BIN)/python -m pytest -q -n 2 --timeout 900

bench: install
	@for b in $(filter-out bench/_%,$(wildcard bench/*.py)); do echo "# $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-demo runs build src/*.egg-info
