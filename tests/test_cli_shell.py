"""netemu's shell of a live run (`netemu run --cli`), driven with a fake network (no root)."""

import io
from types import SimpleNamespace

from netemu.emulate.shell import NetemuCLI, substitute_loopbacks

LOOPBACKS = {"g-paris": "10.200.0.1", "c-odc-00": "10.200.0.2", "sat-0-1": "10.200.0.3", "g-relay-x": "10.200.0.4"}


class _Node:
    def __init__(self, name, ran):
        self.name, self.ran = name, ran

    def cmd(self, command):
        self.ran.append((self.name, command))
        return f"ran {command}\n"


def _shell(lines: str):
    ran = []
    net = SimpleNamespace(nameToNode={n: _Node(n, ran) for n in LOOPBACKS})
    em = SimpleNamespace(net=net, loopbacks=LOOPBACKS, endpoints=("g-paris", "c-odc-00"), now_t_s=lambda: 12.5)
    out = io.StringIO()
    cli = NetemuCLI(em, stdin=io.StringIO(lines), stdout=out)
    cli.cmdloop()                      # returns at end of input, as `exit` does
    return ran, out.getvalue()


def test_node_names_with_dashes_run_commands_with_loopbacks():
    ran, out = _shell("g-paris ping -c 3 c-odc-00\n")
    assert ran == [("g-paris", "ping -c 3 10.200.0.2")]
    assert "ran ping -c 3 10.200.0.2" in out and "Unknown command" not in out


def test_relays_are_nodes_too():
    ran, out = _shell("sat-0-1 ip route get g-paris\ng-relay-x traceroute -n sat-0-1\n")
    assert ran == [("sat-0-1", "ip route get 10.200.0.1"), ("g-relay-x", "traceroute -n 10.200.0.3")]
    assert out.count("note: routes lead to endpoints only; sat-0-1") == 1    # a relay as a target


def test_only_whole_words_are_names():
    assert substitute_loopbacks("ping  g-paris g-paris2 x-g-paris", LOOPBACKS) == "ping  10.200.0.1 g-paris2 x-g-paris"


def test_unknown_names_and_bare_nodes_say_so_and_exit_ends():
    ran, out = _shell("g-pariss ls\ng-paris\nnodes\nnow\nexit\ng-paris ls\n")
    assert ran == []                                  # nothing ran, and nothing after `exit`
    assert "Unknown command: g-pariss ls" in out
    assert "enter a command for node g-paris" in out
    assert "endpoints: c-odc-00 g-paris" in out and "relays: g-relay-x sat-0-1" in out
    assert "t = 12.500 s" in out
