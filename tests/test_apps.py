"""The user's own programs: `[[apps]]` in a scenario (validated at load), run in their nodes at
emulated instants with their output and exit status kept, and `netemu exec` into a live run."""

import os
import time

import pandas as pd
import pytest

import netemu
from conftest import DATA, write_scenario
from netemu.emulate.clock import Clock
from netemu.errors import ScenarioError
from netemu.plan.apps import PlaceholderError, expand_command, placeholders
from netemu.testing import FakeLiveNetwork
from netemu.traffic.apps import Apps

RING = (DATA / "ring.toml").read_text().split("\n[[apps]]")[0] + "\n"


def _load(tmp_path, apps_text):
    return netemu.load_scenario(write_scenario(tmp_path, RING + apps_text))


def test_apps_load_with_their_nodes_commands_and_times(tmp_path):
    s = _load(tmp_path, """
[[apps]]
name = "server"
group = "ring"
command = "iperf3 -s -B {loopback} --logfile 'logs/x y.log'"
start_s = 2
stop_s = 30
[[apps]]
node = "r00-03"
command = ["echo", "{node} {{literal}}", "{addr:r00-01}"]
""")
    server, echo = s.apps
    assert server.nodes == tuple(f"r00-{i:02d}" for i in range(12)) and server.group == "ring"
    assert server.command == ("iperf3", "-s", "-B", "{loopback}", "--logfile", "logs/x y.log")   # shlex, no shell
    assert (server.start_s, server.stop_s) == (2.0, 30.0)
    assert echo.name == "app-1" and echo.nodes == ("r00-03",) and (echo.start_s, echo.stop_s) == (0.0, None)


def test_placeholders_are_substituted_per_argument_never_split():
    addr = {"a": "10.128.0.1", "b": "10.128.0.2"}.get
    assert expand_command(["sh", "-c", "echo {node}; rm -rf /", "{addr:b}:{loopback}", "{{x}}"], "a", addr) == \
        ["sh", "-c", "echo a; rm -rf /", "10.128.0.2:10.128.0.1", "{x}"]
    assert placeholders("{addr:g-x}-{node}") == [("addr", "g-x"), ("node", None)]
    for bad in ("{nod}", "{addr:}", "{", "a}b", "{addr}"):
        with pytest.raises(PlaceholderError):
            placeholders(bad)


@pytest.mark.parametrize("text, key, says", [
    ('node = "r00-99"\ncommand = "true"', "apps[0].node", "a node defined in this scenario, found 'r00-99'; did you mean"),
    ('group = "rng"\ncommand = "true"', "apps[0].group", "a satellite group of this scenario (ring), found 'rng'"),
    ('command = "true"', "apps[0].node", "exactly one of node"),
    ('node = "r00-01"\ngroup = "ring"\ncommand = "true"', "apps[0].node", "exactly one of node"),
    ('node = "r00-01"\ncommand = "ping {addr:r00-02}"', "apps[0].command", "of an endpoint (routes lead to endpoints only), found {addr:r00-02}"),
    ('node = "r00-01"\ncommand = "ping {addr:r00-1}"', "apps[0].command", "a node of this scenario, found 'r00-1'"),
    ('node = "r00-01"\ncommand = "ping {adr:r00-00}"', "apps[0].command", "unknown placeholder '{adr:r00-00}'"),
    ('node = "r00-01"\ncommand = "echo {"', "apps[0].command", "a lone '{'"),
    ('node = "r00-01"\ncommand = "echo \\"unclosed"', "apps[0].command", "No closing quotation"),
    ('node = "r00-01"\ncommand = ""', "apps[0].command", "the command is empty"),
    ('node = "r00-01"\ncommand = ["ping", 3]', "apps[0].command", "a list of strings"),
    ('node = "r00-01"\ncommand = "true"\nstart_s = 20\nstop_s = 10', "apps[0].stop_s", "a time after start_s = 20"),
    ('node = "r00-01"\ncommand = "true"\nstart_s = 61', "apps[0].start_s", "a value in [0, 60]"),
    ('node = "r00-01"\ncommand = "true"\nstrat_s = 1', "apps[0].strat_s", "unknown key"),
    ('name = "a b"\nnode = "r00-01"\ncommand = "true"', "apps[0].name", "1-40 letters"),
])
def test_bad_apps_are_one_error_naming_file_and_key(tmp_path, text, key, says):
    with pytest.raises(ScenarioError) as e:
        _load(tmp_path, "[[apps]]\n" + text + "\n")
    assert key in str(e.value) and says in str(e.value) and "s.toml" in str(e.value)


def test_two_apps_of_one_name_are_refused(tmp_path):
    with pytest.raises(ScenarioError, match=r"apps\[1\].name.*used twice"):
        _load(tmp_path, '[[apps]]\nname="x"\nnode="r00-01"\ncommand="true"\n[[apps]]\nname="x"\nnode="r00-00"\ncommand="true"\n')


def test_apps_start_and_stop_at_their_emulated_instants(tmp_path):
    """Against a fake network at dilation 2: an app starting at t = 10.3 s starts 0.6 s wall
    after the window's start (t0 = 10), gets SIGTERM at its stop_s, and one outside the window
    never starts."""
    s = _load(tmp_path, """
[[apps]]
name = "srv"
node = "r00-01"
command = "sleep 100 {loopback}"
start_s = 10.3
stop_s = 10.6
[[apps]]
name = "late"
node = "r00-00"
command = "sleep 1"
start_s = 50
""")
    t0 = time.monotonic() + 0.2
    live = FakeLiveNetwork([f"r00-{i:02d}" for i in range(12)], clock=Clock(10.0, 20.0, dilation=2.0, origin_mono=t0))
    apps = Apps(s.apps, tmp_path / "run")
    apps.start(live)
    while not live.procs and time.monotonic() < t0 + 3:
        time.sleep(0.005)
    started = time.monotonic()
    assert abs((started - t0) - 0.6) < 0.05
    assert live.started == [("r00-01", ["sleep", "100", live.loopback("r00-01")])]
    proc = live.procs[0]
    while not proc.signals and time.monotonic() < t0 + 3:
        time.sleep(0.005)
    assert proc.signals == [15] and abs((time.monotonic() - t0) - 1.2) < 0.06
    apps.stop()
    apps.write_results(tmp_path / "run")
    t = pd.read_csv(tmp_path / "run" / "apps.csv").set_index("app")
    assert t.loc["srv", "status"] == "stopped" and t.loc["srv", "exit_code"] == -15
    assert abs(t.loc["srv", "start_s"] - 10.3) < 0.03 and abs(t.loc["srv", "end_s"] - 10.6) < 0.03
    assert t.loc["late", "status"] == "not started: outside the run's window"


def test_a_group_app_runs_in_every_node_of_the_run_and_says_which_it_could_not(tmp_path):
    s = _load(tmp_path, '[[apps]]\nname = "beacon"\ngroup = "ring"\ncommand = "echo {node} {loopback}"\n')
    here = [f"r00-{i:02d}" for i in range(0, 12, 2)]          # a scope that left the odd ones out
    live = FakeLiveNetwork(here, clock=Clock(0.0, 5.0, origin_mono=time.monotonic()))
    apps = Apps(s.apps, tmp_path)
    apps.check(here)
    apps.start(live)
    time.sleep(0.1)
    apps.stop()
    assert sorted(live.started) == sorted((n, ["echo", n, live.loopback(n)]) for n in here)
    t = pd.read_csv(apps.write_results(tmp_path) and tmp_path / "apps.csv")
    assert len(t) == 12
    assert set(t[t["node"].isin(here)]["status"]) == {"stopped"}
    assert set(t[~t["node"].isin(here)]["status"]) == {"not started: not in this run's network (scope)"}
    with pytest.raises(Exception, match="app beacon: node r00-01 is not in this run's network"):
        Apps(_load(tmp_path, '[[apps]]\nname = "beacon"\nnode = "r00-01"\ncommand = "true"\n').apps, tmp_path).check(here)


def test_a_missing_program_fails_to_start_and_says_so(tmp_path):
    s = _load(tmp_path, '[[apps]]\nname = "x"\nnode = "r00-01"\ncommand = "no-such-program-here --flag"\n')
    live = FakeLiveNetwork(["r00-01"], clock=Clock(0.0, 5.0, origin_mono=time.monotonic()))
    apps = Apps(s.apps, tmp_path)
    apps.start(live)
    time.sleep(0.1)
    apps.stop()
    apps.write_results(tmp_path)
    t = pd.read_csv(tmp_path / "apps.csv")
    assert t["status"][0] == "failed to start: no program 'no-such-program-here' (not on PATH, or not executable)"
    assert live.started == [] and apps.failures()


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@pytest.mark.root
def test_apps_run_in_their_nodes_and_keep_output_and_status(ring_run):
    out, plan = ring_run["out"], ring_run["plan"]
    t = pd.read_csv(out / "apps.csv").set_index("app")
    lo = pd.read_csv(out / "addresses.csv").query("ifname == 'lo'").set_index("node")["address"]
    # the ping: its placeholder became r00-01's address, it ran to its end and exited 0
    assert t.loc["ping", "command"] == f"ping -n -c 5 -i 0.2 {lo['r00-01']}"
    assert t.loc["ping", "status"] == "exited" and t.loc["ping", "exit_code"] == 0
    assert abs(t.loc["ping", "start_s"] - 0.5) < 0.05
    text = (out / t.loc["ping", "stdout"]).read_text()
    rtts = [float(w.split("=")[1]) for w in text.split() if w.startswith("time=")]
    L = plan.schedule.links
    delay_ms = float(L[(L["a"] == "r00-00") & (L["b"] == "r00-01") & (L["step"] == 0)]["delay_ms"].iloc[0])
    # never faster than light; the median within what two engine traversals and two stacks add
    # (uncalibrated run; ping prints 3 digits)
    assert len(rtts) == 5 and min(rtts) >= round(2 * delay_ms, 1) - 0.05, (rtts, delay_ms)
    assert sorted(rtts)[2] < 2 * delay_ms + 0.5, (rtts, delay_ms)
    # the sleeper was stopped at its stop_s by SIGTERM
    assert t.loc["sleeper", "status"] == "stopped" and t.loc["sleeper", "exit_code"] == -15
    assert abs(t.loc["sleeper", "start_s"] - 1.0) < 0.05 and abs(t.loc["sleeper", "end_s"] - 2.5) < 0.1
    # … and what it forked went with it
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid) == "sleep 101"]
    assert left == []
    assert ring_run["info"]["apps"]["ping"]["exit_codes"] == [0]
    html = (out / "report.html").read_text()
    assert "<h2>Your programs</h2>" in html and "href='apps/r00-00-ping.out'" in html


@pytest.mark.root
def test_exec_runs_a_command_in_a_node_of_a_live_run(ring_run):
    res = {tuple(a): (rc, o, e) for a, rc, o, e in ring_run["exec"]}
    assert len(res) == 5, ring_run["exec"]
    lo = pd.read_csv(ring_run["out"] / "addresses.csv").query("ifname == 'lo'").set_index("node")["address"]
    ping = next(v for k, v in res.items() if k[1] == "r00-01" and k[3] == "ping")
    assert ping[0] == 0 and f"from {lo['r00-00']}" in ping[1] and ping[1].count("time=") == 2
    rtts = [float(w.split("=")[1]) for w in ping[1].split() if w.startswith("time=")]
    assert all(23.9 <= r < 27 for r in rtts), rtts               # 2 × 11.97 ms of light time
    addr = next(v for k, v in res.items() if k[1] == "r00-03")   # by output directory
    assert addr[0] == 0 and f"inet {lo['r00-03']}/32" in addr[1]
    bad_node = next(v for k, v in res.items() if k[1] == "r00-99")
    assert bad_node[0] == 2 and "has no node 'r00-99'" in bad_node[2] and "Traceback" not in bad_node[2]
    bad_addr = next(v for k, v in res.items() if "{addr:nowhere}" in k)
    assert bad_addr[0] == 2 and "no address of node 'nowhere'" in bad_addr[2]
    status = next(v for k, v in res.items() if "exit 3" in k)
    assert status[0] == 3                                         # the command's exit status is exec's
