"""The link engines' control channels under concurrent callers (root; runs in CI). Apart from
test_links.py, whose module-wide busy-polling engine would hold a CPU during these tests."""

import os
import signal
import statistics
import threading
import time

import pytest

from netemu.emulate.links import EngineLinks, LinkParams, build_chain
from netemu.emulate.probe import icmp_rtts_ms

# The delays are sub-millisecond figures: wait for a quiet host first (conftest)
pytestmark = [pytest.mark.root, pytest.mark.timing]


@pytest.mark.parametrize("shards", [2, 4])
def test_concurrent_callers_each_get_their_own_reply(netns, shards):
    """During a run the player (link state), the pilot (overhead) and the main thread (counters)
    call the engines at once. Every request must get its own reply (a reply taken by another
    caller hung or failed runs with 2 or more shards), and the links must carry their delay
    meanwhile."""
    with EngineLinks(shards=shards) as eng:
        names = [f"r{i}" for i in range(5)]
        for n in names:
            netns.add(n)
        links = [f"cc{i}" for i in range(4)]
        addrs = build_chain(eng, netns, names, links, LinkParams(delay_ms=5))
        origin = eng.set_clock()
        # the same chain without callers: what these (sleeping, uncalibrated) engines add by
        # themselves on this host just now, 0.1 ms per hop when it is quiet, more when it pauses
        alone = icmp_rtts_ms(addrs[-1], count=100, interval_s=0.02, timeout_s=1.0, netns=netns.path("r0"))
        assert None not in alone, alone
        stop, errors, calls = threading.Event(), [], [0] * 5

        def hammer(j, fn):
            try:
                while not stop.is_set():
                    fn()
                    calls[j] += 1
                    stop.wait(0.005)     # callers overlap often, yet leave the 2 CPUs to the frames
            except BaseException as e:   # reported below
                errors.append(f"thread {j}: {type(e).__name__}: {e}")

        def updates(j):                  # thread j changes j + 1 links per call (on several shards)
            def fn():
                got = eng.set_params({link: {"loss_pct": 0.0, "up": True} for link in links[:j + 1]})
                assert got == j + 1, f"set_params of {j + 1} links acknowledged {got!r}"
            return fn

        def feed():                      # delay points as the player sends them (same 5 ms)
            t = time.monotonic() - origin + 0.5
            got = eng.set_delay_points({link: [(t, 5.0), (t + 0.1, 5.0)] for link in links})
            assert got == len(links), f"delay points of {len(links)} links acknowledged {got!r}"

        def observe():                   # the main thread's counters and the pilot's overhead
            c = eng.counters()
            assert sorted(set(c["link"])) == sorted(links) and len(c) == 2 * len(links), c
            eng.set_overhead(0.0, 0.0)

        threads = [threading.Thread(target=hammer, args=(j, fn), daemon=True)
                   for j, fn in enumerate([updates(0), updates(1), updates(2), feed, observe])]
        for th in threads:
            th.start()
        try:
            rtts = icmp_rtts_ms(addrs[-1], count=150, interval_s=0.02, timeout_s=1.0, netns=netns.path("r0"))
        finally:
            stop.set()
            for th in threads:
                th.join(10)
        hung = [th.name for th in threads if th.is_alive()]
        if hung:                         # end the engines so the stuck callers return
            for pid in eng.pids:
                os.kill(pid, signal.SIGKILL)
        assert not hung and not errors, (hung, errors, eng.in_flight())
        assert min(calls) >= 20, calls   # the callers did overlap many times
        got = [r for r in rtts if r is not None]
        assert len(got) == len(rtts), f"{len(rtts) - len(got)} of {len(rtts)} echoes lost"
        # 4 links of 5 ms each way, never early; the callers add at most 0.5 ms to the median RTT
        # the engines give without them (the engines' own overhead is not this test's subject)
        base = statistics.median(alone)
        assert 40.0 - 0.1 <= base <= 42.0, sorted(alone)[::10]
        assert min(got) >= 40.0 - 0.1 and statistics.median(got) <= base + 0.5, (base, sorted(got)[::15])
