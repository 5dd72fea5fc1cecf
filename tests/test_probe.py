"""ICMP probes take their send time from the kernel's transmit stamp (root: raw sockets)."""
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


def test_icmp_rtt_excludes_a_stall_between_the_send_time_and_the_send(tmp_path):
    (tmp_path / "p.py").write_text(_LATE_SEND)
    out = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && {sys.executable} {tmp_path / 'p.py'}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rtts = __import__("json").loads(out.stdout)
    assert len(rtts) == 20 and all(r is not None for r in rtts), rtts
    assert max(rtts) < 1.0, rtts      # user-space send times would make every one ≥ 5 ms
    assert min(rtts) > 0, rtts
