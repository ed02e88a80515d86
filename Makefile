# Everyday targets. `make test` is the README's test command.
.PHONY: build test rust-test lint bench demo

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

bench:
	.venv/bin/pip install -q ".[bench]"
	.venv/bin/python -m pytest benches --benchmark-only --benchmark-columns=min,median,ops -q

demo:
	.venv/bin/sipstream demo
