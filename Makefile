# Two commands a newcomer needs (see README.md):
#   make run   installs everything, then emulates the default scenario for a short window
#   make test  installs everything, then runs the whole test suite
OUT ?= out/run-beijing
SCENARIO ?= topologies/beijing-orbital-dc.toml
DURATION ?= 30
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run plan test setup bench bench-run clean-out

setup:
	bash scripts/setup-machine.sh

run: setup
	$(SUDO) .venv/bin/netemu run $(SCENARIO) --duration $(DURATION) -o $(OUT)

plan: setup
	.venv/bin/netemu plan $(SCENARIO) -o out/plan

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python scripts/bench_plan.py

bench-run: setup
	$(SUDO) .venv/bin/python scripts/bench_run.py

clean-out:
	rm -rf out
