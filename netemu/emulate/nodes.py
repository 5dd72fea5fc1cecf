"""The nodes of the live network, the Mininet way (kernel edge; root): every emulated node is a
Mininet node living in a namespace netemu made, so `net["g-beijing"].cmd(...)`, `popen` and the
CLI work as in any Mininet network. Mininet is imported late: the planning side does not need it.
"""

from __future__ import annotations

import pandas as pd

from ..errors import EmulationError
from .addressing import link_mac
from .netns import Namespaces

__all__ = ["router_node_class", "mininet_view"]

_ROUTER_NODE = None


def router_node_class():
    """Mininet's Node, imported late: netemu's planning side does not need Mininet."""
    try:
        from mininet.node import Node   # lazy: Mininet only where nodes are built
    except ImportError as e:
        raise EmulationError(f"Mininet's Python module is missing ({e}); install it with "
                             "`pip install mininet==2.3.0.dev6` (make setup does)") from None

    class RouterNode(Node):
        """A Mininet node living in a namespace netemu made (`netns`, a namespace file).

        Behaves as any Mininet node (cmd, popen, sendCmd, the CLI); its shell joins the existing
        namespace instead of creating one, and with `lazy` starts at the first command. `IP()`
        is the node's loopback, the address other endpoints reach it at."""

        def __init__(self, name: str, netns: str, loopback: str, lazy: bool = False, **params):
            self.netns, self.loopback, self._lazy = netns, loopback, lazy
            super().__init__(name, inNamespace=True, **params)

        def startShell(self, mnopts=None):
            if self._lazy:
                return
            super().startShell(mnopts)

        def _popen(self, cmd, **params):
            # Mininet starts the shell with `mnexec -..n` (a new namespace): join ours instead.
            if not self.shell and cmd and cmd[0] == "mnexec" and cmd[1].startswith("-") and cmd[1].endswith("n"):
                cmd = ["mnexec", cmd[1][:-1], "nsenter", f"--net={self.netns}", *cmd[2:]]
            return super()._popen(cmd, **params)

        def _ensure_shell(self):
            if self.shell is None and self._lazy:
                self._lazy = False
                self.startShell()

        def cmd(self, *args, **kwargs):
            self._ensure_shell()
            return super().cmd(*args, **kwargs)

        def sendCmd(self, *args, **kwargs):
            self._ensure_shell()
            return super().sendCmd(*args, **kwargs)

        def popen(self, *args, **kwargs):
            self._ensure_shell()
            return super().popen(*args, **kwargs)

        def write(self, data):
            self._ensure_shell()
            return super().write(data)

        def IP(self, intf=None):
            return self.loopback if intf is None else super().IP(intf)

        def terminate(self):
            if self.shell is not None:
                super().terminate()

    return RouterNode


def mininet_view(ns: Namespaces, node_names: list[str], endpoints: tuple[str, ...], loopbacks: dict[str, str],
                 link_table: pd.DataFrame):
    """A Mininet network object over the nodes already built: endpoints are its hosts (their
    shells start at once), the other nodes are routers whose shells start at their first
    command. Returns (net, routers)."""
    global _ROUTER_NODE
    _ROUTER_NODE = _ROUTER_NODE or router_node_class()
    from mininet.link import Intf   # lazy: Mininet only where nodes are built
    from mininet.net import Mininet
    net = Mininet(topo=None, controller=None, build=False)
    net.built = True
    eps = set(endpoints)
    routers = []
    for name in node_names:
        node = _ROUTER_NODE(name, netns=ns.path(name), loopback=loopbacks[name], lazy=name not in eps)
        net.nameToNode[name] = node
        (net.hosts if name in eps else routers).append(node)
    no_move = lambda *a, **k: None  # noqa: E731 - interfaces are in place already
    for i, r in enumerate(link_table.itertuples(index=False)):
        for side, (name, ifname, addr) in enumerate(((r.a, r.a_ifname, r.a_addr), (r.b, r.b_ifname, r.b_addr))):
            intf = Intf(ifname, node=net.nameToNode[name], moveIntfFn=no_move, up=None)
            intf.ip, intf.prefixLen, intf.mac = addr, 31, link_mac(i, side)
    return net, routers
