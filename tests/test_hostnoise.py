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


def test_steal_time_is_read_from_proc_stat_and_a_run_warns_above_the_threshold(tmp_path, monkeypatch):
    """/proc/stat's `cpu` line: user nice system idle iowait irq softirq steal guest guest_nice."""
    from netemu import runner
    from netemu.emulate.hostnoise import STEAL_WARN_SHARE, cpu_times, steal_share
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 10 0 5 30 7 0\ncpu0 50 2 25 400 5 0 2 15 3 0\n")
    before = cpu_times(str(stat))
    assert before == {"total": 1000, "steal": 30}           # guest time is in user already
    stat.write_text("cpu  190 5 90 1600 10 0 5 100 9 0\n")
    after = cpu_times(str(stat))
    assert after == {"total": 2000, "steal": 100} and steal_share(before, after) == 0.07
    assert steal_share(after, after) is None
    assert cpu_times(str(tmp_path / "missing")) == {"total": 0, "steal": 0}
    real = cpu_times()
    assert real["total"] > 0 and 0 <= real["steal"] <= real["total"]
    for share, warned in ((STEAL_WARN_SHARE / 2, False), (0.07, True)):
        monkeypatch.setattr(runner, "cpu_times", lambda: {"total": 2000, "steal": int(30 + 1000 * share)})
        info, said = {"host": {}, "warnings": []}, []
        runner._note_steal(info, before, said.append)
        assert info["host"]["cpu_steal_pct"] == round(100 * share, 2)
        assert bool(info["warnings"]) == warned and bool(said) == warned
        if warned:
            assert "7.0 %" in info["warnings"][0] and "steal time" in info["warnings"][0]
