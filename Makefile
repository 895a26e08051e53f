# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: setup test demo lint format clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m ruff check prvql tests benchmarks scripts experiments
	$(PY) -m ruff format --check prvql tests benchmarks scripts experiments
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: setup
	$(PY) -m prvql demo --output demo_output

lint: setup
	$(PY) -m ruff check prvql tests benchmarks scripts experiments
	$(PY) -m ruff format --check prvql tests benchmarks scripts experiments

format: setup
	$(PY) -m ruff format prvql tests benchmarks scripts experiments
	$(PY) -m ruff check --fix prvql tests benchmarks scripts experiments

clean:
	rm -rf .venv demo_output .pytest_cache .ruff_cache
