import netemu


def test_public_api_is_pinned():
    assert sorted(netemu.__all__) == sorted([
        "__version__",
        "NetemuError", "ScenarioError", "TLEError", "PlanError", "TraceError", "EmulationError", "OutputError",
        "Scenario", "Workload", "load_scenario",
        "Track", "Schedule", "Routes",
        "Plan", "make_plan", "write_plan", "read_plan",
        "Emulation", "emulate", "run",
        "Trace", "read_trace", "TraceReplay",
        "Run", "load_run",
    ])
    for name in netemu.__all__:
        assert hasattr(netemu, name), name


def test_errors_form_one_tree():
    for cls in (netemu.ScenarioError, netemu.TLEError, netemu.PlanError, netemu.TraceError, netemu.EmulationError,
                netemu.OutputError):
        assert issubclass(cls, netemu.NetemuError)
    assert issubclass(netemu.TLEError, netemu.ScenarioError)
