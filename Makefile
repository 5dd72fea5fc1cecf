# Two commands a newcomer needs (see README.md):
#   make run   installs everything, then runs the main job on the default scenario
#   make test  installs everything, then runs the whole test suite
OUT ?= out/plan-beijing
SCENARIO ?= topologies/beijing-orbital-dc.toml

.PHONY: run test setup bench clean-out

setup:
	bash scripts/setup-machine.sh

run: setup
	.venv/bin/netemu plan $(SCENARIO) -o $(OUT)

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python scripts/bench_plan.py

clean-out:
	rm -rf out
