# make demo | make test | make bench — each creates .venv and installs first.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# apt-get needs root: as root run it directly, otherwise through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Extras the test suite imports; later stages add theirs here.
EXTRAS ?= dev,monitor,ray,datatest,classifier,eval,pretrained,finetune,privacy

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# Headless Chromium renders the run report in tests/monitor/test_report.py (Debian package `chromium`).
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
		|| echo "warning: chromium could not be installed; the report browser test will be skipped"
	touch $@

demo: install
	$(BIN)/megalang demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q -n 2 --timeout 900

bench: install
	@for b in $(filter-out bench/_%,$(wildcard bench/*.py)); do echo "# $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build src/*.egg-info
