"""Probes take their send and receive times from the kernel's stamps (root: raw sockets, namespaces)."""
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.root]

# In a namespace of its own, with the process's clock running 5 ms early when it takes a send
# time (as if it were preempted for 5 ms between reading the clock and sending): the RTTs over
# loopback must still be the loopback's tens of µs, because the send time is the kernel's.
_LATE_SEND = textwrap.dedent("""
    import json, time
    from netemu.emulate import probe
    real = time.time_ns
    probe.time.time_ns = lambda: real() - 5_000_000
    rtts = probe.icmp_rtts_ms("127.0.0.1", count=20, interval_s=0.005)
    probe.time.time_ns = real
    print(json.dumps(rtts))
""")


def _in_own_netns(tmp_path, script: str):
    """Run `script` in a namespace of its own (loopback up); what it printed, as JSON."""
    (tmp_path / "p.py").write_text(script)
    out = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && {sys.executable} {tmp_path / 'p.py'}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_icmp_rtt_excludes_a_stall_between_the_send_time_and_the_send(tmp_path):
    rtts = _in_own_netns(tmp_path, _LATE_SEND)
    assert len(rtts) == 20 and all(r is not None for r in rtts), rtts
    assert max(rtts) < 1.0, rtts      # user-space send times would make every one ≥ 5 ms
    assert min(rtts) > 0, rtts


# UDP probes: the client's send clock runs 5 ms early (a preemption before the send), and the
# server is stopped for 0.3 s while the probes arrive (a server that wakes late). The one-way
# delays over loopback must still be tens of µs: the kernel stamps both the send and the arrival.
_LATE_UDP = textwrap.dedent("""
    import json, os, signal, subprocess, sys, threading, time
    from netemu.emulate import probe
    srv = subprocess.Popen([sys.executable, "-m", "netemu.emulate.probe", "server", "--max-s", "20"])
    time.sleep(1.0)
    os.kill(srv.pid, signal.SIGSTOP)
    threading.Timer(0.3, os.kill, (srv.pid, signal.SIGCONT)).start()
    real = time.monotonic_ns

    class EarlyAtSend:   # only probe()'s own reading of the send time is early
        def __getattr__(self, name):
            return getattr(time, name)

        def monotonic_ns(self):
            return real() - (5_000_000 if sys._getframe(1).f_code.co_name == "probe" else 0)

    probe.time = EarlyAtSend()
    rows = probe.probe("127.0.0.1", count=20, interval_s=0.005)
    srv.kill()
    print(json.dumps(rows))
""")


def test_udp_one_way_delays_exclude_a_late_sender_and_a_late_server(tmp_path):
    rows = _in_own_netns(tmp_path, _LATE_UDP)
    assert len(rows) == 20 and all(r[2] is not None for r in rows), rows
    assert max(r[2] for r in rows) >= 100, rows          # the replies did wait for the stopped server
    assert all(0 < r[3] < 1.0 for r in rows), rows       # arrivals stamped by the kernel, sends too
