"""netemu: emulate space-ground data networks and measure what AI workloads get from them.

The public API (pinned by tests/test_api.py):

    scenario = netemu.load_scenario("topologies/beijing-orbital-dc.toml")
    plan = netemu.make_plan(scenario)
    netemu.write_plan(plan, "out/")
"""

__version__ = "0.1.0"

from .errors import EmulationError, NetemuError, PlanError, ScenarioError, TLEError, TraceError
from .orbits import Track
from .plan import Plan, make_plan, read_plan, write_plan
from .routing import Routes
from .scenario import Scenario, load_scenario
from .topology import Schedule

__all__ = [
    "__version__",
    "NetemuError", "ScenarioError", "TLEError", "PlanError", "TraceError", "EmulationError",
    "Scenario", "load_scenario",
    "Track", "Schedule", "Routes",
    "Plan", "make_plan", "write_plan", "read_plan",
]
