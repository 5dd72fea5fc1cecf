"""A run's life: refused next to another live run, interrupted with its measurements kept,
calibration corrections bounded, the wall time said up front."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from netemu.emulate.calibration import MAX_OVERHEAD_US, check_calibration
from netemu.errors import EmulationError
from netemu.emulate.netns import list_netemu_namespaces, list_runs, new_run_id, register_run, unregister_run
from conftest import DATA, ROOT


def test_calibration_beyond_the_bound_is_an_error_that_says_why():
    check_calibration(5.0, 40.0)                    # what a quiet host measures
    check_calibration(MAX_OVERHEAD_US, MAX_OVERHEAD_US)
    for hop, origin in ((2000.0, 40.0), (5.0, 800.0), (float("nan"), 0.0)):
        with pytest.raises(EmulationError, match=r"another run is live .* or the host is heavily loaded"):
            check_calibration(hop, origin)
    with pytest.raises(EmulationError, match="shorter than the light-time"):
        check_calibration(2000.0, 2000.0)


@pytest.mark.root
def test_a_second_run_is_refused_while_one_is_live(root_env, tmp_path):
    other = subprocess.Popen(["sleep", "120"])          # the owner of a live run elsewhere
    rid = new_run_id()
    register_run(rid, pid=other.pid, scenario="elsewhere", out_dir="/somewhere")
    try:
        r = subprocess.run([sys.executable, "-m", "netemu", "run", str(DATA / "small.toml"), "-o",
                            str(tmp_path / "out"), "--duration", "5"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("netemu: error:") == 1
        err = r.stderr.strip().splitlines()[-1]
        assert f"another netemu run is live: run {rid} (pid {other.pid}" in err and "--allow-concurrent" in err
        assert not (tmp_path / "out").exists()
        from netemu.runner import check_concurrent
        with pytest.warns(UserWarning, match="alongside another live netemu run"):
            assert "alongside" in check_concurrent(True)[0]
    finally:
        other.kill()
        other.wait()
        unregister_run(rid)


@pytest.mark.root
def test_ctrl_c_keeps_the_measurements_and_tears_down(root_env, tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "netemu", "run", str(DATA / "small.toml"), "-o", str(out),
                          "--duration", "300", "--no-calibrate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    seen = ""
    deadline = time.monotonic() + 180
    while "playing t =" not in seen and time.monotonic() < deadline and p.poll() is None:
        seen += p.stderr.readline()
    assert "playing t =" in seen, seen
    assert "of wall time" in seen                  # the wall time was said before the run started
    time.sleep(4.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, seen + err
    assert "Traceback" not in err
    info = json.loads((out / "run.json").read_text())
    assert info["interrupted"] is True and info["partial"] is True and "error" not in info
    probes = pd.read_parquet(out / "probes.parquet")
    assert len(probes) >= 4 * 20 and probes["rtt_ms"].notna().sum() > 0
    assert (out / "apply.csv").exists() and (out / "fidelity.json").exists()
    assert (out / "report.html").exists()
    rid = info["run_id"]
    assert not [n for n in list_netemu_namespaces() if n.startswith(f"netemu-{rid}-")]
    assert rid not in {e["id"] for e in list_runs()}


def test_run_defaults_to_a_short_window():
    from netemu.cli import DEFAULT_RUN_DURATION_S, _default_duration, build_parser

    class _Plan:
        class track:
            t_s = [0.0, 1800.0, 3600.0]
    assert DEFAULT_RUN_DURATION_S == 60.0
    assert _default_duration(_Plan, 0.0, None) == 60.0
    assert _default_duration(_Plan, 3570.0, None) == 30.0        # cut to the plan's end
    assert _default_duration(_Plan, 0.0, 600.0) == 600.0
    assert "default 60" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()


@pytest.mark.root
def test_a_failed_run_says_so_in_run_json(root_env, small_plan, tmp_path, monkeypatch):
    import netemu
    from netemu.emulate.emulation import Emulation

    def broken(self):
        raise EmulationError("the engine could not start (test)")
    monkeypatch.setattr(Emulation, "_build", broken)
    with pytest.raises(EmulationError, match="could not start"):
        netemu.run(small_plan, tmp_path / "out", duration_s=5)
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["error"] == "the engine could not start (test)" and info["interrupted"] is False
    assert info["run_id"] not in {e["id"] for e in list_runs()}
