VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[serve,tune,test]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests --doctest-modules transforms

lint: install
	$(VENV)/bin/ruff check transforms pipelines tests benchmarks

demo: install
	$(PY) -m pipelines.examples.demo

bench: install
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
