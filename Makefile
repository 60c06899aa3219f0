# The two commands of README.md.  Both run the set-up first (idempotent).
PYTHON ?= python3

.PHONY: setup demo test
setup:
	bash scripts/setup.sh

demo: setup
	nitro-mcu demo

test: setup
	OPENBLAS_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 -q -rs
