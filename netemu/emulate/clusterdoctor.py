"""`netemu doctor --hosts SCHEDULER`: can the Dask workers of a scheduler carry one emulation?

Per host (worker): root and TUN/TAP, the MTU of its interface on the hosts' network (a cut link's
MTU is that minus the wire's headers), its clock offset against this machine (Cristian's method,
with its bound); per ordered pair of hosts: the wire's UDP reaching the other host, and the
substrate's one-way latency and jitter (half the UDP round trip). From these, the cut threshold
the run should use: links shorter than it must not be cut.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import numpy as np

from .doctor import Check
from .hostagent import WIRE_OVERHEAD_BYTES

__all__ = ["cluster_checks", "host_facts", "start_echo", "udp_rtts_ms"]


def host_facts(ip: str) -> dict:
    """Run on a worker: root, TUN/TAP, the MTU of the interface holding `ip`, a UDP bind there."""
    mtu = None
    try:
        import fcntl
        import struct
        for _, name in socket.if_nameindex():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))[20:24])
                if addr == ip:
                    mtu = struct.unpack("16si", fcntl.ioctl(s.fileno(), 0x8921, struct.pack("16si", name.encode()[:15], 0)))[1]
            except OSError:
                pass
            finally:
                s.close()
    except Exception:
        pass
    bind_ok = True
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        s.close()
    except OSError:
        bind_ok = False
    return {"root": os.geteuid() == 0, "tun": os.path.exists("/dev/net/tun"), "mtu": mtu, "bind": bind_ok,
            "python": sys.version.split()[0]}


def start_echo(ip: str, seconds: float = 10.0) -> int:
    """Run on a worker: a UDP echo on `ip` (any port) for `seconds`, in a thread; its port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.settimeout(0.5)

    def serve():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data, peer = s.recvfrom(2048)
            except socket.timeout:
                continue
            s.sendto(data, peer)
        s.close()
    threading.Thread(target=serve, daemon=True).start()
    return s.getsockname()[1]


def udp_rtts_ms(src_ip: str, dst_ip: str, port: int, count: int = 200, interval_s: float = 0.002) -> list:
    """Run on a worker: UDP round trips (ms; None where lost) from `src_ip` to an echo."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src_ip, 0))
    s.settimeout(0.2)
    out = []
    for k in range(count):
        t0 = time.perf_counter()
        s.sendto(k.to_bytes(4, "big") + b"\0" * 60, (dst_ip, port))
        try:
            while True:
                data = s.recv(2048)
                if int.from_bytes(data[:4], "big") == k:
                    out.append((time.perf_counter() - t0) * 1e3)
                    break
        except socket.timeout:
            out.append(None)
        time.sleep(interval_s)
    s.close()
    return out


def cluster_checks(scheduler: str, mtu: int = 1500, count: int = 200) -> list[Check]:
    """The checks (see the module's docstring), ending with the cut threshold they imply."""
    from .cluster import OFFSET_ROUNDS, connect, workers_by_name
    client = connect(scheduler)
    try:
        workers = workers_by_name(client)
        checks = [Check("scheduler", bool(workers), f"{scheduler}: {len(workers)} worker(s) "
                        f"({', '.join(workers) or 'none'})", "start `dask worker SCHEDULER --name hN` on every host")]
        bounds = []
        for h, w in workers.items():
            f = client.run(host_facts, w["ip"], workers=[w["address"]])[w["address"]]
            checks.append(Check(f"{h} root", f["root"], "yes" if f["root"] else "no", "run the dask worker as root"))
            checks.append(Check(f"{h} TUN/TAP", f["tun"], "/dev/net/tun present" if f["tun"] else "missing",
                                "modprobe tun"))
            m = f["mtu"]
            ok = m is not None and m - WIRE_OVERHEAD_BYTES >= 1280
            checks.append(Check(f"{h} MTU", ok, f"{m} on {w['ip']}: cut links get MTU "
                                f"{min(mtu, (m or 0) - WIRE_OVERHEAD_BYTES)}" if m else f"no interface holds {w['ip']}",
                                "an underlay MTU ≥ 1335 (1555 keeps 1500 on cut links)"))
            best = None
            for _ in range(OFFSET_ROUNDS):   # the shortest round trip bounds the offset: more rounds, a tighter bound
                t0 = time.time()
                th = client.run(time.time, workers=[w["address"]])[w["address"]]
                t1 = time.time()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, th - (t0 + t1) / 2)
            bound_ms, off_ms = best[0] / 2 * 1e3, best[1] * 1e3
            bounds.append(bound_ms)
            checks.append(Check(f"{h} clock", bound_ms <= 1.0, f"offset {off_ms:+.3f} ms ± {bound_ms:.3f} ms "
                                f"(corrected by runs; the bound is what remains)",
                                "synchronise the hosts (chrony or PTP) and keep the coordinator near them"))
        one_way = []
        names = list(workers)
        for a in names:
            for b in names:
                if a == b:
                    continue
                wa, wb = workers[a], workers[b]
                port = client.run(start_echo, wb["ip"], 5.0 + count * 0.004, workers=[wb["address"]])[wb["address"]]
                rtts = client.run(udp_rtts_ms, wa["ip"], wb["ip"], port, count, workers=[wa["address"]])[wa["address"]]
                got = np.array([r for r in rtts if r is not None], float)
                ok = len(got) >= 0.9 * count
                if ok:
                    ow = got / 2
                    one_way.append(np.percentile(ow, 99.9))
                    detail = (f"wire UDP reaches {b}; one-way p50 {np.median(ow):.3f} ms, p99.9 "
                              f"{np.percentile(ow, 99.9):.3f} ms, jitter (p99 − p50) "
                              f"{np.percentile(ow, 99) - np.median(ow):.3f} ms")
                else:
                    detail = f"{len(got)} of {count} UDP probes answered"
                checks.append(Check(f"{a} → {b} substrate", ok, detail,
                                    "open the hosts' UDP ports to each other (the wire uses one free port per engine)"))
        if one_way:
            thr = max(one_way) + max(bounds) + 0.1
            checks.append(Check("cut threshold", True, f"{thr:.3f} ms (substrate p99.9 one-way {max(one_way):.3f} ms "
                                f"+ clock bound {max(bounds):.3f} ms + 0.1 ms): shorter links must stay on one host "
                                f"(`netemu partition --cut-threshold-ms {thr:.2f}`)"))
        return checks
    finally:
        client.close()
