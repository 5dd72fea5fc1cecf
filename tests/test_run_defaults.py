"""What `netemu run` does by default (no root): probe pairs, dilation, probe windows."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from netemu.emulate.player import PLAY_COSTS, ROUTE_LAG_TARGET_S, auto_dilation
from netemu.plan.pairs import DEFAULT_PROBE_PAIRS, default_probe_pairs
from netemu.traffic.probes import probe_windows
from netemu.plan.scenario import GroundStation


def _plan(stations, compute=("c-0",)):
    names = [st.name for st in stations]
    nodes = pd.DataFrame({"name": [*compute, *names], "kind": ["compute"] * len(compute) + ["ground"] * len(names)})
    return SimpleNamespace(schedule=SimpleNamespace(nodes=nodes),
                           scenario=SimpleNamespace(endpoints=(*names, *compute), ground_stations=stations))


def test_big_scenarios_get_a_few_pairs_spread_over_the_globe():
    europe = [GroundStation(f"g-eu{i:02d}", 45 + i * 0.2, 5 + i * 0.3) for i in range(25)]
    far = [GroundStation("g-sydney", -33.9, 151.2), GroundStation("g-lima", -12.0, -77.0),
           GroundStation("g-tokyo", 35.7, 139.7), GroundStation("g-nairobi", -1.3, 36.8),
           GroundStation("g-anchorage", 61.2, -149.9)]
    stations = europe[:10] + far + europe[10:]
    pairs = default_probe_pairs(_plan(stations))
    assert len(pairs) == DEFAULT_PROBE_PAIRS == 10
    assert {d for _, d in pairs} == {"c-0"}
    srcs = [s for s, _ in pairs]
    assert {st.name for st in far} <= set(srcs)                    # every far station is probed
    assert srcs == [st.name for st in stations if st.name in srcs]  # in the scenario's order
    assert srcs[0] == stations[0].name
    # with no more stations than the cap, every one of them
    assert [s for s, _ in default_probe_pairs(_plan(far))] == [st.name for st in far]


def test_auto_dilation_is_one_for_small_windows_and_grows_with_the_work():
    small, info = auto_dilation(np.full(100, 20), step_s=1.0, moving_links=500, shards=1)
    assert small == 1.0 and info["bound_by"] is None
    # a Starlink-size window: thousands of route changes per 100 ms step, ~7,000 moving links
    big, info = auto_dilation(np.full(100, 2000), step_s=0.1, moving_links=7000, shards=1)
    assert big > 1 and big == int(big) and info["bound_by"] in ("player", "engine", "route_lag")
    # at the chosen K each bound holds, and at K - 1 one of them does not
    route = PLAY_COSTS["route_change_s"]
    assert 2000 * route / big <= ROUTE_LAG_TARGET_S + 1e-12
    assert max(info["bounds"].values()) > big - 1
    more, _ = auto_dilation(np.full(100, 4000), step_s=0.1, moving_links=7000, shards=1)
    fewer_shards, _ = auto_dilation(np.full(100, 0), step_s=0.1, moving_links=7000, shards=1)
    more_shards, _ = auto_dilation(np.full(100, 0), step_s=0.1, moving_links=7000, shards=4)
    assert more >= big and more_shards <= fewer_shards
    # probe traffic: 99 pairs × 20 echoes/s × 2 × 24 hops (a 100-city Starlink default before)
    # overloads one engine; 10 pairs do not
    many, info = auto_dilation(np.zeros(100), 0.1, 0, 1, frames_per_s=99 * 20 * 2 * 24)
    few, _ = auto_dilation(np.zeros(100), 0.1, 0, 1, frames_per_s=10 * 20 * 2 * 24)
    assert many > 1 and info["bound_by"] == "engine_frames" and few == 1


def test_probe_windows_say_which_pairs_started_late():
    t = np.arange(0, 10, 0.05)
    df = pd.concat([pd.DataFrame({"t_s": t, "src": "g-a", "dst": "c-0"}),
                    pd.DataFrame({"t_s": t[t >= 2.4], "src": "g-b", "dst": "c-0"})], ignore_index=True)
    windows, warns = probe_windows(df, ["g-a>c-0", "g-b>c-0", "g-c>c-0"], 0.0, 10.0)
    assert windows["g-a>c-0"] == {"first_t_s": 0.0, "last_t_s": 9.95, "late_start_s": 0.0, "early_end_s": 0.05}
    assert windows["g-b>c-0"]["first_t_s"] == pytest.approx(2.4) and windows["g-b>c-0"]["late_start_s"] == pytest.approx(2.4)
    assert windows["g-c>c-0"]["first_t_s"] is None
    assert len(warns) == 2
    assert "g-b>c-0" in warns[0] and "2.4 s late" in warns[0]
    assert "g-c>c-0" in warns[1] and "no probe" in warns[1]
