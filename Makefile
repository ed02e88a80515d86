# Everyday targets. `make test` is the README's test command.
.PHONY: build test rust-test lint bench bench-report demo

build:
	.venv/bin/pip install -q -e ".[test]" || (python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]")

test:
	./scripts/test

rust-test:
	cargo test

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	.venv/bin/ruff check python tests benches

# Every benchmark, 7 runs each, pinned (see BENCHMARKS.md); results in
# benches/results/ (gitignored), tables printed at the end. Installs only the
# peers of the `bench` extra, never the project itself.
bench:
	.venv/bin/pip install -q $$(.venv/bin/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
	.venv/bin/python benches/run.py

# The tables of the last `make bench` into BENCHMARKS.md.
bench-report:
	.venv/bin/python benches/report.py --write

demo:
	.venv/bin/sipstream demo
