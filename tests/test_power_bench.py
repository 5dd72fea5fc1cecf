"""Planning power and sunlight for 1,000 compute satellites over a day at 10 s steps adds ≤ 5 s
(issue 16 target). Not run by default: `pytest -m bench tests/test_power_bench.py -s`."""

import time
from datetime import datetime, timezone

import numpy as np
import pytest

from netemu.plan.orbits import propagate, sun_ecef_km, time_grid_s, walker_satrecs
from netemu.plan.power import energy_balance, power_table, sunlit_fraction
from netemu.plan.scenario import ComputeGroup, WalkerShell


@pytest.mark.bench
def test_power_for_1000_satellites_over_a_day(tmp_path):
    epoch = datetime(2026, 6, 21, tzinfo=timezone.utc)
    shell = WalkerShell(name="c", prefix="c", altitude_km=750, inclination_deg=98.4, planes=20, sats_per_plane=50,
                        phasing=1, raan_spread_deg=360, raan0_deg=0.0, compute=True)
    t_s = time_grid_s(86_400, 10.0)
    track = propagate(walker_satrecs(shell, epoch), [f"c{i}" for i in range(1000)], epoch, t_s)
    group = ComputeGroup(group="c", accelerators_per_satellite=8, prefill_tokens_per_s_per_accelerator=1e4,
                         decode_tokens_per_s_per_sequence=100.0, sequences_per_accelerator=32,
                         accelerator_busy_w=700.0, accelerator_idle_w=80.0, bus_w=1000.0, solar_array_w=8600.0,
                         battery_wh=4000.0, throttle_below_soc_pct=60.0, throttled_accelerators=4,
                         refuse_below_soc_pct=20.0, expected_utilisation=0.8)
    times = {}
    t0 = time.perf_counter()
    sun = sun_ecef_km(epoch, t_s)
    f = sunlit_fraction(track.xyz_km, sun)
    times["sunlight"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    soc, power, active = energy_balance(group, f, 10.0)
    times["energy balance"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = power_table(t_s, list(track.names), f, soc, power, active)
    times["table"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table.to_parquet(tmp_path / "power.parquet", index=False)
    times["power.parquet"] = time.perf_counter() - t0
    total = sum(times.values())
    print(f"\n1,000 satellites × {len(t_s):,} steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
          + f"; total {total:.2f} s; {(f < 0.5).mean() * 100:.1f} % of satellite-steps in shadow")
    assert (f < 0.5).any() and len(table) == 1000 * len(t_s)
    assert total <= 5.0
