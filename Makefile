VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install azurite test demo bench lint clean

install: $(STAMP)

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[serve,tune,test]"
	touch $(STAMP)

# Azurite, Microsoft's storage emulator, for the blob storage tests: npm, pinned in
# .azurite/package.json + package-lock.json, installed into .azurite/node_modules (git-ignored).
AZURITE := .azurite/node_modules/.bin/azurite-blob

azurite: $(AZURITE)

$(AZURITE): .azurite/package.json .azurite/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd .azurite && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.bin/azurite-blob; \
	else \
		echo "make azurite: npm is not installed: the Azurite blob storage tests will be skipped"; \
	fi

test: install azurite
	$(PY) -m pytest -q -n 2 tests --doctest-modules transforms --durations=20

lint: install
	$(VENV)/bin/ruff check transforms pipelines tests benchmarks

demo: install
	$(PY) -m pipelines.examples.demo

bench: install
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .azurite/node_modules
