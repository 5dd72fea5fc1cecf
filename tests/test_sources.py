"""Traffic sources' orchestration against a fake live network (no root): which programs start in
which nodes, in which order, with which addresses and instants, and what is torn down after a
failure."""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

import netemu
from netemu.emulate import probe as probe_program
from netemu.emulate.clock import Clock
from netemu.runner import start_sources
from netemu.testing import FakeLiveNetwork
from netemu.traffic import agent as agent_program
from netemu.traffic.launcher import WorkloadRunner
from netemu.traffic.probes import Iperf, Probes

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def wl_plan():
    return netemu.make_plan(netemu.load_scenario(DATA / "workloads.toml"), workers=2)


def _live(plan, t0_s=330.0, t_end_s=346.0, dilation=1.0, **kw) -> FakeLiveNetwork:
    clock = Clock(t0_s, t_end_s, dilation=dilation, origin_mono=time.monotonic() + 0.5)
    return FakeLiveNetwork(plan.schedule.node_names, clock, **kw)


def test_workload_agents_start_in_the_nodes_with_roles(wl_plan, tmp_path):
    live = _live(wl_plan, dilation=2.0)
    wr = WorkloadRunner(wl_plan, tmp_path / "workloads")
    wr.start(live)
    nodes = [n for n, _ in live.started]
    assert sorted(nodes) == ["g-beijing", "g-sanya", "w02-01", "w03-00"]       # clients and servers, once each
    for node, cmd in live.started:
        assert cmd[:3] == [sys.executable, "-m", agent_program.__name__]
        spec = json.loads(Path(cmd[3]).read_text())
        assert spec["node"] == node and spec["address"] == live.loopback(node)
    chat_server = json.loads((tmp_path / "workloads" / "w03-00.spec.json").read_text())
    role = next(r for r in chat_server["roles"] if r["role"] == "inference-server")
    assert role["service_s"] == pytest.approx(0.05 * 2.0)                     # wall seconds: × dilation
    client = json.loads((tmp_path / "workloads" / "g-beijing.spec.json").read_text())
    (chat,) = [r for r in client["roles"] if r["role"] == "inference-client"]
    assert chat["server"] == live.loopback("w03-00") and len(chat["jobs"]) > 10
    for job in chat["jobs"]:   # every request is due inside the window, on the run's clock
        assert live.clock.mono(330.0) <= job[1] <= live.clock.mono(346.0)
    wr.stop()
    assert all(p.signals == [signal.SIGTERM] for p in live.procs)
    wr.kill()                                                 # after stop: nothing left to kill
    assert all(p.signals == [signal.SIGTERM] for p in live.procs)


def test_an_agent_that_dies_is_reported(wl_plan, tmp_path):
    live = _live(wl_plan, fail_in=("w02-01",))
    wr = WorkloadRunner(wl_plan, tmp_path / "workloads")
    (tmp_path / "workloads").mkdir()
    wr.start(live)
    (tmp_path / "workloads" / "w02-01.stderr").write_text("Traceback …\nOSError: address in use\n")
    wr.stop()
    (bad,) = wr.failures()
    assert bad.startswith("agent in w02-01 exited with 1") and "address in use" in bad


def test_probes_start_one_process_per_source_at_the_rate_asked(wl_plan, tmp_path):
    live = _live(wl_plan, dilation=4.0)
    pairs = [("g-sanya", "g-beijing"), ("g-sanya", "w03-00"), ("g-beijing", "w03-00")]
    pr = Probes(wl_plan, pairs, 20.0, tmp_path / ".probes")
    pr.start(live)
    assert [n for n, _ in live.started] == ["g-sanya", "g-beijing"]
    (_, sanya), (_, beijing) = live.started
    assert sanya[:4] == [sys.executable, "-m", probe_program.__name__, "stream"]
    assert sanya[4:6] == [live.loopback("g-beijing"), live.loopback("w03-00")]
    # 20 echoes per emulated second per pair, two pairs, 4 wall seconds per emulated second
    assert float(sanya[sanya.index("--interval") + 1]) == pytest.approx(4.0 / (20 * 2))
    assert float(beijing[beijing.index("--interval") + 1]) == pytest.approx(4.0 / 20)
    assert float(sanya[sanya.index("--timeout") + 1]) == pytest.approx(2.0 * 4.0)


def test_probe_results_convert_to_emulated_time_and_keep_the_window(wl_plan, tmp_path):
    live = _live(wl_plan, dilation=2.0)
    pr = Probes(wl_plan, [("g-sanya", "g-beijing")], 20.0, tmp_path / ".probes")
    pr.start(live)
    c = live.clock
    out = Path(live.started[0][1][live.started[0][1].index("--out") + 1])
    out.write_text("t_send_mono_s,dst,rtt_ms\n"
                   f"{c.mono(329.0)},{live.loopback('g-beijing')},40.0\n"      # before the window: dropped
                   f"{c.mono(331.0)},{live.loopback('g-beijing')},40.0\n"
                   f"{c.mono(332.0)},{live.loopback('g-beijing')},\n")         # lost
    pr.stop()
    e = pr.echoes
    assert e["t_s"].tolist() == pytest.approx([331.0, 332.0])
    assert e["rtt_ms"].iloc[0] == pytest.approx(20.0) and e["rtt_ms"].isna().iloc[1]   # ÷ dilation
    pr.write_results(tmp_path)
    assert (tmp_path / "probes.parquet").exists() and pr.table["oracle_rtt_ms"].notna().all()


def test_iperf_starts_the_server_before_the_client(wl_plan, tmp_path):
    live = _live(wl_plan)
    ip = Iperf("g-sanya", "g-beijing", tmp_path / "iperf.json")
    ip.start(live)
    (n1, server), (n2, client) = live.started
    assert n1 == "g-beijing" and server[:2] == ["iperf3", "-s"] and live.loopback("g-beijing") in server
    assert n2 == "g-sanya" and client[:3] == ["iperf3", "-c", live.loopback("g-beijing")]
    assert client[client.index("-B") + 1] == live.loopback("g-sanya")
    assert client[client.index("-t") + 1] == "16"                             # the window, wall seconds


class _Source:
    def __init__(self, log: list, name: str, fail: bool = False):
        self.log, self.name, self.fail = log, name, fail

    def start(self, live):
        self.log.append(("start", self.name))
        if self.fail:
            raise RuntimeError(f"{self.name} could not start")

    def kill(self):
        self.log.append(("kill", self.name))


def test_a_failed_start_tears_down_every_source_started_before_it():
    log: list = []
    sources = {"probes": _Source(log, "probes"), "replay": None, "workloads": _Source(log, "workloads", fail=True),
               "iperf": _Source(log, "iperf")}
    with pytest.raises(RuntimeError, match="workloads could not start"):
        with ExitStack() as stack:
            start_sources(stack, object(), sources, ("probes",))
            start_sources(stack, object(), sources, ("replay", "workloads", "iperf"))
    # in order, the one after the failure never started, the half-started one is killed too
    assert log == [("start", "probes"), ("start", "workloads"), ("kill", "workloads"), ("kill", "probes")]
