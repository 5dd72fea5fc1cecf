"""The link engine's wire for cut links (root; runs in CI), without Dask: two engine sets stand
for two hosts, joined over the loopback; a link whose ends they each hold carries pings with its
delay, and a receiver whose epoch is wrong releases frames at the wrong instant and counts them
late."""

import time

import pytest

from netemu.emulate.links import EngineLinks, LinkEnd, LinkParams
from netemu.emulate.probe import icmp_rtts_ms

pytestmark = pytest.mark.root

DELAY_MS = 5.0


def _cut_link(netns, a: EngineLinks, b: EngineLinks, epoch_skew_s: float = 0.0) -> None:
    pa, pb = netns.add("wa"), netns.add("wb")
    port_a, port_b = a.open_wire("127.0.0.1")[0], b.open_wire("127.0.0.1")[0]
    now = time.monotonic()
    a.set_wire_epoch(now)
    b.set_wire_epoch(now + epoch_skew_s)       # b's clock believed ahead: it releases frames late
    a.add_cut_link("cut", 7, "a", LinkEnd(pa, "c0"), ("127.0.0.1", port_b), LinkParams(delay_ms=DELAY_MS))
    b.add_cut_link("cut", 7, "b", LinkEnd(pb, "c0"), ("127.0.0.1", port_a), LinkParams(delay_ms=DELAY_MS))
    for name, addr in (("wa", "10.252.0.0/31"), ("wb", "10.252.0.1/31")):
        netns.run(name, ["ip", "addr", "add", addr, "dev", "c0"])
        netns.run(name, ["ip", "link", "set", "c0", "up"])
    # neighbours resolved before measuring, as in a run (which installs them): the echo that
    # waits for ARP is sent inside the engine's write of the ARP reply, not by the prober
    icmp_rtts_ms("10.252.0.1", 2, 0.005, timeout_s=1.0, netns=netns.path("wa"))


def test_a_cut_link_carries_frames_with_its_delay_and_counts_none_late(netns):
    with EngineLinks(shards=1) as a, EngineLinks(shards=1) as b:
        a.wire_counters = b.wire_counters = True
        _cut_link(netns, a, b)
        rtts = [r for r in icmp_rtts_ms("10.252.0.1", 40, 0.02, netns=netns.path("wa")) if r is not None]
        assert len(rtts) >= 38
        assert 2 * DELAY_MS <= min(rtts) and sorted(rtts)[len(rtts) // 2] <= 2 * DELAY_MS + 0.5, rtts
        c = a.counters().set_index("direction"), b.counters().set_index("direction")
        assert c[0].loc["ab", "wire_tx"] >= 40 and c[1].loc["ab", "wire_rx"] == c[0].loc["ab", "wire_tx"]
        assert c[1].loc["ba", "wire_tx"] >= 40 and c[0].loc["ba", "wire_rx"] == c[1].loc["ba", "wire_tx"]
        assert c[0]["wire_late"].sum() == 0 and c[1]["wire_late"].sum() == 0


def test_a_receiver_with_the_wrong_epoch_is_off_by_it_and_counts_late_frames(netns):
    """b maps the shared epoch 8 ms later than a: a's frames wait 8 ms more at b, and b's frames
    reach a 8 ms past their (a-side) instant, which a counts late."""
    with EngineLinks(shards=1) as a, EngineLinks(shards=1) as b:
        a.wire_counters = b.wire_counters = True
        _cut_link(netns, a, b, epoch_skew_s=0.008)
        rtts = [r for r in icmp_rtts_ms("10.252.0.1", 30, 0.02, netns=netns.path("wa")) if r is not None]
        med = sorted(rtts)[len(rtts) // 2]
        # a→b waits 5 + 8 ms; b→a is due 8 ms before b even sends it: it leaves on arrival
        assert 2 * DELAY_MS + 8 - 5 - 0.3 <= med <= 2 * DELAY_MS + 8 - 5 + 1.0, rtts
        ca = a.counters().set_index("direction")
        assert ca.loc["ba", "wire_late"] >= 25 and ca.loc["ba", "wire_max_late_ms"] >= 2.5
