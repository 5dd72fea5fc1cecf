"""The queueing inference server's core (netemu.traffic.batching, pure): a saturated server's
queue wait against the M/D/c queue solved independently, the bounded queue, prefill and decode
times by hand, and decode slowing when power takes slots away under a full batch."""

import math

import numpy as np
import pytest

from netemu.traffic.batching import BatchServer


def _poisson_pmf(mean: float, n: int) -> np.ndarray:
    k = np.arange(n)
    return np.exp(k * math.log(mean) - mean - np.array([math.lgamma(x + 1) for x in k]))


def mdc_by_chain(lam: float, d: float, c: int, n: int = 400) -> tuple[float, float]:
    """M/D/c mean wait in queue and probability of waiting, solved numerically from the
    number in system at instants D apart: X' = max(X − c, 0) + A, A ~ Poisson(λD) (with
    deterministic service the requests beyond the first c are all still there D later, those in
    service all gone). Its stationary law is the law at any instant; Little's law gives the
    mean wait and PASTA the probability of waiting."""
    a = _poisson_pmf(lam * d, n)
    P = np.zeros((n, n))
    for i in range(n):
        base = max(i - c, 0)
        P[i, base:] = a[:n - base]
    P[:, -1] += 1 - P.sum(1)
    A = P.T - np.eye(n)
    A[-1] = 1.0
    b = np.zeros(n)
    b[-1] = 1.0
    p = np.linalg.solve(A, b)
    lq = float((np.maximum(np.arange(n) - c, 0) * p).sum())
    return lq / lam, float(p[c:].sum())


def mdc_by_crommelin(lam: float, d: float, c: int, terms: int = 400) -> float:
    """Crommelin's (1932) M/D/c mean wait, W = D Σ_n e^{−ncρ} [Σ_{k≥nc} (ncρ)^k/k! −
    ρ⁻¹ Σ_{k≥nc+1} (ncρ)^k/k!] (Tijms, A First Course in Stochastic Models, 2003, §9.6)."""
    rho = lam * d / c
    w = 0.0
    for m in range(1, terms):
        mean = m * c * rho
        pmf = _poisson_pmf(mean, int(mean * 3 + 60))
        w += pmf[m * c:].sum() - pmf[m * c + 1:].sum() / rho
    return d * w


def test_the_two_mdc_solutions_agree_and_reduce_to_pollaczek_khinchine():
    assert mdc_by_chain(0.8, 1.0, 1)[0] == pytest.approx(0.8 / (2 * 0.2), rel=1e-6)   # M/D/1: ρD/2(1−ρ)
    for c in (2, 4, 8):
        assert mdc_by_chain(0.8 * c, 1.0, c)[0] == pytest.approx(mdc_by_crommelin(0.8 * c, 1.0, c), rel=1e-4)


def test_saturated_server_waits_as_mdc():
    """Poisson arrivals at ρ = 0.8 on c = 4 slots, every request 200 prompt tokens at 1,000
    tokens/s and 9 output tokens at 10 tokens/s: D = 0.2 + 8/10 = 1 s."""
    c, d, rho, n = 4, 1.0, 0.8, 300_000
    lam = rho * c / d
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(1 / lam, n))
    s = BatchServer(prefill_tokens_per_s=1000, decode_tokens_per_s=10, queue_limit=n, slots=c)
    reqs = [s.arrive(float(x), j, 200, 9) for j, x in enumerate(t)]
    s.advance(float("inf"))
    assert s.served == n and s.refused == 0
    service = np.array([r.prefill_s + r.decode_s for r in reqs])
    assert np.allclose(service, d)
    wait = np.array([r.queue_s for r in reqs])[n // 20:]          # past the empty start
    w_expected, p_wait = mdc_by_chain(lam, d, c)
    assert w_expected == pytest.approx(0.3861, abs=1e-4)
    # seeds 0-5 at this length fall within −0.1 % … +5.4 % of the expectation
    assert wait.mean() == pytest.approx(w_expected, rel=0.03)
    assert (wait > 0).mean() == pytest.approx(p_wait, rel=0.03)


def test_bounded_queue_refuses_and_counts():
    s = BatchServer(1000, 100, queue_limit=2, slots=1)
    reqs = [s.arrive(0.0, j, 100, 11) for j in range(5)]        # 0.1 s prefill + 0.1 s decode each
    assert [r.refused for r in reqs] == [False, False, False, True, True] and s.refused == 2
    s.advance(10.0)
    assert [r.t_admit for r in reqs[:3]] == pytest.approx([0.0, 0.2, 0.4])
    assert [r.t_done for r in reqs[:3]] == pytest.approx([0.2, 0.4, 0.6])
    assert s.served == 3 and s.busy == 0


def test_prefill_grows_with_the_prompt_and_tokens_come_at_the_decode_rate():
    s = BatchServer(prefill_tokens_per_s=5000, decode_tokens_per_s=50, queue_limit=0, slots=8)
    short, long = s.arrive(1.0, "s", 500, 5), s.arrive(1.0, "l", 5000, 5)
    assert short.t_first == pytest.approx(1.1) and long.t_first == pytest.approx(2.0)
    assert [s.token_time(long, k) for k in range(5)] == pytest.approx([2.0, 2.02, 2.04, 2.06, 2.08])
    s.advance(3.0)
    assert long.t_done == pytest.approx(2.08) and long.decode_s == pytest.approx(0.08)


def test_no_slots_queues_until_power_returns():
    s = BatchServer(1000, 10, queue_limit=10, slots=0)
    r = s.arrive(0.0, 1, 100, 1)
    s.advance(5.0)
    assert r.t_admit is None and s.next_event_s() == float("inf")
    s.set_slots(5.0, 32)
    assert r.t_admit == 5.0 and r.queue_s == 5.0
    s.advance(6.0)
    assert r.t_done == pytest.approx(5.1)                      # one token: prefill only


def test_fewer_slots_under_a_full_batch_slow_its_decode():
    """4 sequences decoding 101 tokens at 10 tokens/s; at t = 2 s throttling leaves 2 slots:
    they share them, 5 tokens/s each, so 100 − 20 = 80 tokens left take 16 s instead of 8."""
    s = BatchServer(1e9, 10, queue_limit=10, slots=4)
    reqs = [s.arrive(0.0, j, 1, 101) for j in range(4)]
    q = s.arrive(0.0, "q", 1, 1)
    s.set_slots(2.0, 2)
    assert s.rate == pytest.approx(5.0)
    assert s.token_time(reqs[0], 30) == pytest.approx(2.0 + 10 / 5.0)
    s.advance(100.0)
    assert [r.t_done for r in reqs] == pytest.approx([18.0] * 4)
    assert q.t_admit == pytest.approx(18.0)                    # the queue waits for a free slot


def test_bad_arguments():
    with pytest.raises(ValueError, match="rates must be > 0"):
        BatchServer(0, 10, 1)
    with pytest.raises(ValueError, match="≥ 0"):
        BatchServer(1, 10, -1)
    with pytest.raises(ValueError, match="≥ 0"):
        BatchServer(1, 10, 1).set_slots(0.0, -3)


def test_agent_queues_refuses_and_follows_the_slot_schedule(tmp_path):
    """The agent's queueing server (its I/O edge) on this host's loopback, no emulation: no
    slots until t0 + 0.5 s, then one; a queue of one. Requests at t0, t0 + 0.05 and t0 + 0.1
    (the first waits, the others are refused), and at t0 + 0.55 (waits for the first: 0.1 s
    prefill + 10 tokens at 100 tokens/s)."""
    import json
    import os
    import subprocess
    import sys
    import time
    port = 42000 + os.getpid() % 1000
    t0 = time.monotonic() + 1.5
    jobs = [[j, t0 + dt, 100, 11, 10, 1000] for j, dt in enumerate((0.0, 0.05, 0.1, 0.55))]
    roles = {
        "srv": {"role": "inference-server", "workload": "w", "port": port, "service_s": 0, "token_interval_s": 0,
                "queue": {"prefill_tokens_per_s": 10_000, "decode_tokens_per_s": 100, "queue_limit": 1,
                          "slots": [[t0 - 1, 0], [t0 + 0.5, 1]]}},
        "cli": {"role": "inference-client", "workload": "w", "server": "127.0.0.1", "port": port, "node": "cli",
                "queued": True, "jobs": jobs}}
    procs = []
    for node, role in roles.items():
        spec = tmp_path / f"{node}.json"
        spec.write_text(json.dumps({"node": node, "address": "127.0.0.1", "log": str(tmp_path / f"{node}.jsonl"),
                                    "roles": [role]}))
        procs.append(subprocess.Popen([sys.executable, "-m", "netemu.traffic.agent", str(spec)]))
    try:
        time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    ev = [json.loads(x) for n in roles for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
    by = {(e["ev"], e.get("job")): e for e in ev}
    assert {j for (k, j) in by if k == "refused"} == {1, 2}
    assert by[("served", 0)]["queue_s"] == pytest.approx(0.5, abs=0.01)
    assert by[("served", 3)]["queue_s"] == pytest.approx(0.15, abs=0.01)
    assert by[("served", 0)]["prefill_s"] == pytest.approx(0.1) and by[("served", 0)]["decode_s"] == pytest.approx(0.1)
    # never before the model's instant (one clock for both programs), and within 10 ms of it
    assert 0.6 <= by[("first_byte", 0)]["t"] - t0 < 0.61
    assert 0.9 <= by[("done", 3)]["t"] - t0 < 0.91                 # 0.7 + 0.1 prefill + 0.1 decode
    assert by[("done", 0)]["bytes"] == 11 * 10 and ("done", 1) not in by
