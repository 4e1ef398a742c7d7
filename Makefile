# Every target sets up first (fast when nothing changed); see scripts/setup.sh.
.PHONY: setup test lint smoke demo bench

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check .

smoke: setup
	.venv/bin/rlvr --help
	.venv/bin/rlvr train --print-config > /dev/null

demo: setup
	.venv/bin/rlvr demo

bench: setup
	.venv/bin/python -m benchmarks
