# The two commands of the README: `make demo` and `make test`.
VENV := .venv
export PYTHONWARNINGS ?= ignore::UserWarning:multiprocessing.resource_tracker

.PHONY: demo test lint venv clean

venv:
	@scripts/bootstrap.sh

demo: venv
	$(VENV)/bin/sdllm-demo --out out

test: venv
	$(VENV)/bin/python -m pytest -q

lint: venv
	$(VENV)/bin/python -m ruff check .

clean:
	rm -rf out build
