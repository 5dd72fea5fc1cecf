"""The fidelity verdict (netemu.traffic.fidelity.assess) on synthetic probe tables: a run that is not
faithful always says why (pairs, instants, engine lateness, route-apply lag, host load) and what
to do; no root needed."""

import numpy as np
import pandas as pd

from netemu.traffic.fidelity import FIDELITY_P99_MS, assess


def _probes(pairs=("g-a>c-0", "g-b>c-0"), t0_s=0.0, t_end_s=60.0, rate_hz=20.0, err_ms=0.05, seed=0):
    """Probes of each pair at `rate_hz` over [t0_s, t_end_s), RTT = oracle + `err_ms` + small noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(t0_s, t_end_s, 1 / rate_hz)
    frames = []
    for i, p in enumerate(pairs):
        s, d = p.split(">")
        oracle = 40.0 + 10 * i + 0.01 * t
        frames.append(pd.DataFrame({"t_s": t, "src": s, "dst": d, "oracle_rtt_ms": oracle,
                                    "rtt_ms": oracle + err_ms + rng.normal(0, 0.01, len(t))}))
    return pd.concat(frames, ignore_index=True).sort_values("t_s", ignore_index=True)


def _assess(df, **kw):
    return assess(df, {}, guard_s=0.001, timeout_s=2.0, **kw)


def test_faithful_run_has_no_reasons():
    f = _assess(_probes(), engine=[{"frames": 10_000, "late_frames": 3}], apply_lag_ms=np.full(50, 2.0),
                pilot_drift=pd.DataFrame({"t_s": [5.0, 10.0], "drift_us": [1.0, -2.0]}))
    assert f["verdict"] == "faithful" and f["reasons"] == [] and f["causes"] == []
    assert f["threshold_p99_ms"] == FIDELITY_P99_MS and f["engine"]["late_share"] == 0.0003


def test_not_faithful_without_any_measurement_still_says_why_and_what_to_do():
    df = _probes()
    bad = (df["src"] == "g-b") & df["t_s"].between(30, 33)
    df.loc[bad, "rtt_ms"] += 2.0
    f = _assess(df)
    assert f["verdict"] == "not faithful"
    assert f["reasons"] and f["causes"][0] == "error" and "engine_late" not in f["causes"]
    text = " | ".join(f["reasons"])
    assert "above the 0.5 ms threshold" in text
    assert "g-b>c-0" in text and "g-a>c-0" not in text.split("worst:")[1].split("|")[0]   # the bad pair only
    worst_t = [w["t_s"] for w in f["worst_instants"]]
    assert all(30 <= t <= 33 for t in worst_t) and f"t = {worst_t[0]:g} s" in text
    assert "no engine counters, route-apply lag or pilot readings" in text
    assert f["reasons"][-1].startswith("what to do:") and "--dilation" in f["reasons"][-1]


def test_engine_lateness_apply_lag_and_host_load_are_named_with_advice():
    df = _probes(err_ms=1.2)
    f = _assess(df, engine=[{"frames": 100_000, "late_frames": 4_000}, {"frames": 50_000, "late_frames": 500}],
                apply_lag_ms=np.r_[np.full(90, 3.0), np.full(10, 150.0)],
                pilot_drift=pd.DataFrame({"t_s": [10.0, 20.0, 30.0], "drift_us": [2.0, 35.0, 8.0]}))
    assert f["verdict"] == "not faithful"
    assert {"error", "engine_late", "apply_lag", "host_load"} <= set(f["causes"])
    text = " | ".join(f["reasons"])
    assert "4,500 of 150,000 frames (3.0 %)" in text
    assert "route changes were installed late" in text and "150" in text
    assert "host load" in text and "35 µs" in text and "t = 20 s" in text
    todo = f["reasons"][-1]
    assert "raise --dilation" in todo and "stop other load" in todo and "--shards" in todo
    assert f["engine"] == {"frames": 150_000, "late_frames": 4_500, "late_share": 0.03}
    # the gist in one sentence: what was off, the causes found, what to do (not the causes ruled out)
    assert f["why"].startswith(f["reasons"][0]) and f["why"].endswith(todo)
    assert "fell behind" in f["why"] and "installed late" in f["why"] and "host load:" in f["why"]
    assert f["host"]["pilot_drift_us_max_abs"] == 35.0 and f["apply_lag_ms"]["max"] == 150.0


def test_causes_ruled_out_are_said_and_traffic_named():
    df = _probes(err_ms=0.9)
    f = _assess(df, loaded=True, engine=[{"frames": 1000, "late_frames": 0}], apply_lag_ms=np.full(20, 1.0),
                pilot_drift=pd.DataFrame({"t_s": [1.0], "drift_us": [3.0]}))
    assert f["verdict"].startswith("not faithful (under traffic")
    assert "traffic" in f["causes"] and "engine_late" not in f["causes"] and "host_load" not in f["causes"]
    text = " | ".join(f["reasons"])
    assert "kept up" in text and "installed in time" in text and "steady" in text and "queueing" in text
    assert "kept up" not in f["why"] and "queueing" in f["why"]
    assert "run without traffic" in f["reasons"][-1]


def test_losses_while_reachable_and_many_pairs():
    df = _probes(pairs=tuple(f"g-{i}>c-0" for i in range(20)), t_end_s=10.0)
    lost = df.index[(df["src"] == "g-7")][:5]
    df.loc[lost, "rtt_ms"] = np.nan
    f = _assess(df)
    assert f["verdict"] == "not faithful" and "loss" in f["causes"] and "many_pairs" in f["causes"]
    text = " | ".join(f["reasons"])
    assert "5 probe(s) lost while the planned path was up: g-7>c-0 (5)" in text
    assert "probe fewer pairs" in f["reasons"][-1] and "20 were probed" in f["reasons"][-1]


def test_nothing_compared_is_not_assessed_with_a_reason():
    df = _probes(t_end_s=5.0)
    df["oracle_rtt_ms"] = np.nan
    f = _assess(df)
    assert f["verdict"].startswith("not assessed")
    assert f["reasons"] and "while the plan had no path" in f["reasons"][0]


def _bad_minute(df, t_a=120.0, t_b=180.0, share=0.05, extra_ms=0.85):
    """Add `extra_ms` to a `share` of the probes sent in [t_a, t_b)."""
    idx = df.index[df["t_s"].between(t_a, t_b, inclusive="left")]
    hit = idx[:: int(round(1 / share))]
    df.loc[hit, "rtt_ms"] += extra_ms
    return df


def test_a_bad_minute_inside_a_good_run_is_not_faithful_and_named():
    df = _bad_minute(_probes(pairs=("g-a>c-0",), t_end_s=480.0))
    f = _assess(df, t0_s=0.0, t_end_s=480.0)
    assert f["overall"]["abs_error_p99_ms"] <= FIDELITY_P99_MS          # the whole run alone would pass
    assert f["window_s"] == 60.0 and len(f["windows"]) == 8
    w = f["windows"][2]
    assert (w["t_start_s"], w["t_end_s"], w["verdict"]) == (120.0, 180.0, "not faithful")
    assert w["n"] == 1200 and w["p99_ms"] > 0.85 and abs(w["p50_ms"] - 0.05) < 0.01
    assert all(x["verdict"] == "faithful" for i, x in enumerate(f["windows"]) if i != 2)
    assert set(f["windows"][0]) >= {"t_start_s", "t_end_s", "n", "p50_ms", "p99_ms", "verdict"}
    assert f["verdict"] == "not faithful in t = 120–180 s"
    assert "window" in f["causes"]
    text = " | ".join(f["reasons"])
    assert "1 of 8 windows of 60 s not faithful although the whole run's p99 was" in text
    assert "t = 120–180 s (p99 0.9" in text or "t = 120–180 s (p99 0.8" in text
    assert f["reasons"][-1].startswith("what to do:")


def test_host_load_in_the_bad_window_is_named():
    df = _bad_minute(_probes(pairs=("g-a>c-0",), t_end_s=480.0))
    drift = pd.DataFrame({"t_s": np.arange(1.0, 480.0, 2.0)})
    drift["drift_us"] = np.where(drift["t_s"].between(120, 180), 40.0, 2.0)
    f = _assess(df, t0_s=0.0, t_end_s=480.0, pilot_drift=drift)
    assert "host_load" in f["causes"]
    assert f["windows"][2]["pilot_drift_us_max_abs"] == 40.0 and f["windows"][0]["pilot_drift_us_max_abs"] == 2.0
    assert "host load in t = 120–180 s (pilot drift 40 µs per traversal)" in " | ".join(f["reasons"])
    assert "stop other load" in f["reasons"][-1]


def test_short_runs_use_10_s_windows_and_thin_windows_do_not_decide():
    df = _probes(pairs=("g-a>c-0",), t_end_s=34.0)
    f = _assess(df, t0_s=0.0, t_end_s=34.0)
    assert f["window_s"] == 10.0 and [w["t_start_s"] for w in f["windows"]] == [0, 10, 20, 30]
    assert [w["verdict"] for w in f["windows"]] == ["faithful"] * 3 + ["too few probes"]   # 80 probes in 30-34 s
    assert f["verdict"] == "faithful"
    # a bad last window with too few probes does not decide the run; a full one does
    g = _bad_minute(df.copy(), 30.0, 34.0, share=1 / 16)   # 5 of its 80 probes
    assert _assess(g, t0_s=0.0, t_end_s=34.0)["verdict"] == "faithful"
    h = _bad_minute(df.copy(), 10.0, 20.0, share=1 / 40)   # 5 of its 200 probes
    f = _assess(h, t0_s=0.0, t_end_s=34.0)
    assert f["verdict"] == "not faithful in t = 10–20 s" and f["windows"][1]["verdict"] == "not faithful"


def test_the_advice_doubles_the_run_s_own_dilation():
    df = _probes()
    df.loc[(df["src"] == "g-b") & df["t_s"].between(30, 33), "rtt_ms"] += 2.0
    assert "--dilation 2 (this run: 1)" in _assess(df)["reasons"][-1]
    assert "--dilation 6 (this run: 3)" in _assess(df, dilation=3.0)["reasons"][-1]


def test_probes_in_flight_during_an_engine_stall_are_counted_apart():
    # 2-ms stalls every 4 s delayed the probes in flight then by 2 ms: counted apart, the run
    # stays faithful and says how many; the same probes without the stall table fail the threshold.
    df = _probes()
    starts = np.arange(2.0, 60.0, 4.0)
    stalls = pd.DataFrame({"t_start_s": starts, "t_end_s": starts + 0.002})
    t1 = df["t_s"] + df["rtt_ms"] / 1e3
    hit = np.zeros(len(df), bool)
    for a, b in stalls[["t_start_s", "t_end_s"]].to_numpy():
        hit |= (df["t_s"] < b).to_numpy() & (t1 > a).to_numpy()
    assert 0.01 * len(df) < hit.sum() < 0.05 * len(df)
    df.loc[hit, "rtt_ms"] += 2.0
    bad = _assess(df)
    assert bad["verdict"] == "not faithful"       # 2-ms errors on > 1 % of the probes
    f = _assess(df, stalls=stalls)
    assert f["verdict"] == "faithful", f["reasons"]
    o = f["overall"]
    assert o["overlapping_engine_stall"] == hit.sum() and o["compared"] == len(df) - hit.sum()
    assert o["abs_error_p99_ms"] < 0.1
    assert f["engine_stalls"] == {"count": 15, "total_ms": 30.0, "max_ms": 2.0, "probes": int(hit.sum()),
                                  "probe_share": round(int(hit.sum()) / len(df), 4)}
    assert o["abs_error_p99_with_stalls_ms"] > 1.9
    # a stall explains no more than its length: a probe 5 ms late in a 2-ms stall stays compared
    far = np.flatnonzero(hit)[1]
    df.loc[far, "rtt_ms"] += 3.0
    h = _assess(df, stalls=stalls)
    assert h["overall"]["overlapping_engine_stall"] == hit.sum() - 1 and h["overall"]["error_max_ms"] > 4.9
    # a probe within the threshold needs no excuse: stalls alone put nothing apart
    assert _assess(_probes(), stalls=stalls)["overall"]["overlapping_engine_stall"] == 0
    # a lost probe is not excused by a stall: it still counts as lost
    df.loc[np.flatnonzero(hit)[0], "rtt_ms"] = np.nan
    g = _assess(df, stalls=stalls)
    assert g["overall"]["lost_while_reachable"] == 1 and g["verdict"] == "not faithful"


def test_a_host_that_stalls_the_engine_often_is_not_faithful_and_is_named():
    df = _probes()
    starts = np.arange(0.25, 60, 0.25)                        # a 3-ms stall every quarter second …
    stalls = pd.DataFrame({"t_start_s": starts, "t_end_s": starts + 0.003})
    t1 = df["t_s"] + df["rtt_ms"] / 1e3
    for a in starts:                                          # … delaying the probes in flight by 3 ms
        df.loc[((df["t_s"] < a + 0.003) & (t1 > a)).to_numpy(), "rtt_ms"] += 3.0
    assert _assess(df)["overall"]["abs_error_p99_ms"] > 2.9
    f = _assess(df, stalls=stalls)
    assert f["overall"]["abs_error_p99_ms"] < 0.1             # the others are fine
    assert f["engine_stalls"]["probe_share"] > 0.05 and f["verdict"] == "not faithful"
    assert "engine_stall" in f["causes"]
    text = " | ".join(f["reasons"])
    assert "stalled the link engine 239 times" in text and "idle CPUs" in text
