# make run: start Loupe.  make test: the whole test suite, browser tests included.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome || echo /usr/bin/chromium)

.PHONY: run test bench chromium clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements.txt | $(PY)
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements-dev.txt $(VENV)/.deps
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

run: $(VENV)/.deps
	$(PY) -m streamlit run app.py

test: $(VENV)/.dev-deps chromium
	LOUPE_CHROMIUM=$(CHROMIUM) $(PY) -m pytest

# fastai is installed for the comparison only; Loupe itself never needs it.
$(VENV)/.bench-deps: requirements-bench.txt $(VENV)/.dev-deps
	$(PY) -m pip install -r requirements-bench.txt
	touch $@

bench: $(VENV)/.bench-deps
	$(PY) bench/data_bench.py
	$(PY) bench/precision_cpu.py
	$(PY) bench/vs_fastai.py
	$(PY) bench/progressive.py
	$(PY) bench/estimate_bench.py
	LOUPE_CHROMIUM=$(CHROMIUM) $(PY) bench/ui_latency.py

# Browser tests drive the system Chromium (never a downloaded browser build).
chromium:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Chromium for the browser tests (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Chromium is missing, so the browser tests will be skipped."; \
		echo "Install it with: sudo apt-get install chromium   (or set CHROMIUM=/path/to/chrome)"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache
