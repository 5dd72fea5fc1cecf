"""What a run plays, as data (no root): window, scope, per-step link states, the RTT oracle and
the fidelity summary."""

import numpy as np
import pandas as pd
import pytest

from netemu.errors import EmulationError
from netemu.emulate.playback import fidelity, link_states, oracle_rtt_ms, scope_nodes, window


def test_window_covers_the_asked_span(small_plan):
    t = small_plan.schedule.t_s          # 0, 10, …, 1200
    w = window(t, 95.0, 100.0)
    assert (w.k0, w.k1) == (9, 20) and t[w.k0] <= 95 and t[w.k1] >= 195
    assert window(t).k1 == len(t) - 1
    for start, dur, key in ((-1, None, "start"), (1300, None, "start"), (0, 0, "duration"), (1100, 200, "duration")):
        with pytest.raises(EmulationError, match=key):
            window(t, start, dur)


def test_link_states_follow_the_schedule(small_plan):
    sched = small_plan.schedule
    w = window(sched.t_s, 100, 300)
    L = sched.links
    pairs = L[["a", "b"]].astype(str).drop_duplicates()
    st = link_states(sched, pairs["a"].to_numpy(), pairs["b"].to_numpy(), w)
    assert st.delay_ms.shape == (w.k1 - w.k0 + 1, len(pairs))
    index = {(a, b): j for j, (a, b) in enumerate(zip(pairs["a"], pairs["b"]))}
    rows = L[(L["step"] >= w.k0) & (L["step"] <= w.k1)]
    present = np.zeros(st.up.shape, bool)
    for r in rows.itertuples(index=False):
        i, j = r.step - w.k0, index[(str(r.a), str(r.b))]
        present[i, j] = True
        assert st.delay_ms[i, j] == r.delay_ms and st.up[i, j] == r.up and st.rate_mbps[i, j] == r.rate_mbps
    assert not st.up[~present].any()                      # absent links are down
    # an absent link keeps its last delay (or its first one before it appears)
    i, j = np.argwhere(~present & present.any(axis=0))[0]
    seen = np.nonzero(present[:, j])[0]
    before = seen[seen < i]
    expect = st.delay_ms[before[-1], j] if len(before) else st.delay_ms[seen[0], j]
    assert st.delay_ms[i, j] == expect


def test_scope_paths_keeps_endpoints_and_path_satellites(small_plan):
    sched, routes, eps = small_plan.schedule, small_plan.routes.routes, small_plan.scenario.endpoints
    w = window(sched.t_s, 0, 300)
    nodes = scope_nodes(sched, routes, eps, w, "paths")
    assert set(eps) <= set(nodes) and len(nodes) < len(sched.node_names)
    on_paths = set()
    for p in small_plan.routes.paths.query("step <= 30").itertuples():
        on_paths.update(small_plan.routes.path_at(p.src, p.dst, p.t_s))
    assert on_paths <= set(nodes)
    assert scope_nodes(sched, routes, eps, w, "all") == sched.node_names
    assert scope_nodes(sched, routes, eps, w, "auto") == sched.node_names   # 148 satellites: below the threshold
    with pytest.raises(EmulationError, match="scope"):
        scope_nodes(sched, routes, eps, w, "some")


def test_oracle_is_twice_the_path_delay_and_linear_between_steps(small_plan):
    sched, routes, paths = small_plan.schedule, small_plan.routes.routes, small_plan.routes.paths
    pair = paths[(paths["src"] == "g-beijing") & (paths["dst"] == "c01")].set_index("step")
    steps = [k for k in pair.index if k + 1 in pair.index and
             small_plan.routes.path_at("g-beijing", "c01", sched.t_s[k]) ==
             small_plan.routes.path_at("g-beijing", "c01", sched.t_s[k + 1])][:5]
    assert steps
    for k in steps:
        t0, t1 = sched.t_s[k], sched.t_s[k + 1]
        got = oracle_rtt_ms(sched, routes, "c01", "g-beijing", np.array([t0, (t0 + t1) / 2]))
        assert got[0] == pytest.approx(2 * pair.loc[k, "delay_ms"], rel=1e-9)
        assert got[1] == pytest.approx(pair.loc[k, "delay_ms"] + pair.loc[k + 1, "delay_ms"], rel=1e-9)
    unreachable = routes[(routes["path"] == "")]
    if len(unreachable):
        r = unreachable.iloc[0]
        assert np.isnan(oracle_rtt_ms(sched, routes, str(r.src), str(r.dst), np.array([r.t_s])))[0]


def test_fidelity_counts_straddling_lost_and_unreachable_apart():
    probes = pd.DataFrame({
        "t_s": [0.0, 1.0, 2.0, 2.97, 4.0, 5.0, 6.0],
        "src": "a", "dst": "b",
        "rtt_ms": [10.1, 10.2, np.nan, 30.0, np.nan, 10.0, 9.9],
        "oracle_rtt_ms": [10.0, 10.0, 10.0, 10.0, np.nan, 10.0, 10.0]})
    f = fidelity(probes, {("a", "b"): np.array([3.0])}, guard_s=0.01, timeout_s=2.0)
    o = f["overall"]
    # 2.0 lost in flight until 4.0 straddles the change at 3.0, as does 2.97 (back at 3.0 + guard); 4.0 is unreachable
    assert o["straddling_path_change"] == 2 and o["unreachable"] == 1 and o["lost_while_reachable"] == 0
    assert o["compared"] == 4 and o["error_max_ms"] == pytest.approx(0.2) and o["error_min_ms"] == pytest.approx(-0.1)
    assert f["pairs"]["a>b"]["probes"] == 7
    f = fidelity(probes, {}, guard_s=0.01, timeout_s=2.0)
    assert f["overall"]["lost_while_reachable"] == 1 and f["overall"]["error_max_ms"] == pytest.approx(20.0)
