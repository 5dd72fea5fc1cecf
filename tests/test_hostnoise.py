"""The host-pause gauge (netemu.emulate.hostnoise): a CPU shared with a busy process reads as paused."""
import os
import subprocess
import sys

from netemu.emulate.hostnoise import PAUSE_S, is_quiet, measure_pauses, wait_for_quiet


def test_a_cpu_shared_with_a_spinning_process_reads_as_paused_for_half_the_time():
    cpu = max(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        m = measure_pauses(cpu, duration_s=1.0)
    finally:
        hog.kill()
        hog.wait()
    # the scheduler shares the CPU in slices of milliseconds: the gauge sees about half the time gone
    assert m["cpu"] == cpu and 0.9 <= m["duration_s"] <= 1.5
    assert 0.3 <= m["paused_share"] <= 0.7 and m["max_ms"] >= 1.0 and m["pauses"] >= 20, m
    assert not is_quiet(m)


def test_readings_and_the_quiet_wait_are_bounded():
    m = measure_pauses(duration_s=0.3)
    assert m["pauses"] >= 0 and 0.0 <= m["paused_share"] < 1.0
    assert m["max_ms"] == 0.0 or m["max_ms"] > PAUSE_S * 1e3
    w = wait_for_quiet(max_wait_s=0.0, sample_s=0.3)         # one reading, whatever it says
    assert w["waited_s"] < 5 and w["quiet"] == is_quiet(w)
