# Two commands a newcomer needs (see README.md):
#   make run   installs everything, then emulates the default scenario for a short window
#   make test  installs everything, then runs the whole test suite
SCENARIO ?= topologies/beijing-orbital-dc.toml
# one directory per scenario: out/run-<scenario file name>; a rerun replaces that run's files
# (--overwrite replaces an earlier netemu run only; any other non-empty directory is refused)
OUT ?= out/run-$(basename $(notdir $(SCENARIO)))
DURATION ?= 30
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run plan test setup setup-test bench bench-run bench-replay goldens clean-out

setup:
	bash scripts/setup-machine.sh

# the tests also need Chromium (the report test renders report.html headless)
setup-test:
	bash scripts/setup-machine.sh --with-browser

run: setup
	$(SUDO) .venv/bin/netemu run $(SCENARIO) --duration $(DURATION) -o $(OUT) --overwrite

plan: setup
	.venv/bin/netemu plan $(SCENARIO) -o out/plan

test: setup-test
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python scripts/bench_plan.py

bench-run: setup
	$(SUDO) .venv/bin/python scripts/bench_run.py

bench-replay: setup
	$(SUDO) .venv/bin/python scripts/bench_replay.py --rate 100000

# Rewrite the golden summaries of topologies/ after a deliberate change (review the diff first)
goldens: setup
	for s in topologies/*.toml; do .venv/bin/netemu plan $$s --save-golden topologies/golden/$$(basename $$s .toml) || exit 1; done

clean-out:
	rm -rf out
