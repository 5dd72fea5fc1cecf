"""netemu: emulate space-ground data networks and measure what AI workloads get from them.

The public API (pinned by tests/test_api.py):

    scenario = netemu.load_scenario("topologies/beijing-orbital-dc.toml")
    plan = netemu.make_plan(scenario)
    netemu.write_plan(plan, "out/")
    with netemu.emulate(plan, duration_s=60) as em:      # root
        em.start()
        em["g-beijing"].cmd("ping -c 3", em.loopback("c-odc-00"))
    netemu.run(plan, "out/run")                          # what `netemu run` does: also the
                                                         # scenario's [[workloads]] (jobs.csv)
    trace = netemu.read_trace("traces/inference.pcap")   # streaming pcap reader
    replay = netemu.TraceReplay(plan, "traces/upload.pcap", mode="closed")
    netemu.run(plan, "out/replay", workloads=False, replay=replay)   # what `netemu replay` does
    run = netemu.load_run("out/run")                     # its tables as pandas DataFrames
    run.probes, run.jobs, run.fidelity                   # (docs/notebook_example.py)

Names are imported on first use, so processes that need only a small part (the link engine,
probes inside emulated nodes) start fast.
"""

import importlib

from .errors import EmulationError, NetemuError, OutputError, PlanError, ScenarioError, TLEError, TraceError

__version__ = "0.1.0"

_LAZY = {
    "Track": "plan.orbits", "Plan": "plan.planner", "make_plan": "plan.planner", "read_plan": "plan.planner",
    "write_plan": "plan.planner", "Routes": "plan.routing", "Scenario": "plan.scenario",
    "load_scenario": "plan.scenario", "Schedule": "plan.topology", "Workload": "plan.scenario",
    "Emulation": "emulate.emulation", "run": "runner",
    "Trace": "traffic.trace", "read_trace": "traffic.trace", "TraceReplay": "traffic.replay",
    "Run": "results", "load_run": "results",
}

__all__ = [
    "__version__",
    "NetemuError", "ScenarioError", "TLEError", "PlanError", "TraceError", "EmulationError", "OutputError",
    "Scenario", "Workload", "load_scenario",
    "Track", "Schedule", "Routes",
    "Plan", "make_plan", "write_plan", "read_plan",
    "Emulation", "emulate", "run",
    "Trace", "read_trace", "TraceReplay",
    "Run", "load_run",
]


def __getattr__(name: str):
    if name == "emulate":   # the wing, callable: netemu.emulate(plan, ...) is emulate.emulation.emulate
        return importlib.import_module(".emulate", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netemu' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
