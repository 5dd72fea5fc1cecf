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


def test_fault_commands_call_the_injector_and_show_its_errors():
    from netemu.emulate.inject import InjectError
    calls = []

    def row(kind, target):
        return {"kind": kind, "target": target, "t_s": 12.5, "links": 4, "apply_ms": 0.2, "reroute_due_s": 12.6}

    def fail_node(name, duration_s=None):
        if name not in LOOPBACKS:
            raise InjectError(f"unknown node {name!r}")
        calls.append(("fail_node", name, duration_s))
        return row("fail_node", name)

    def fail_link(a, b, duration_s=None):
        calls.append(("fail_link", a, b, duration_s))
        return row("fail_link", f"{a}|{b}")

    def restore(a=None, b=None):
        calls.append(("restore", a, b))
        return [row("restore", a or "all")]

    net = SimpleNamespace(nameToNode={n: _Node(n, []) for n in LOOPBACKS})
    em = SimpleNamespace(net=net, loopbacks=LOOPBACKS, endpoints=("g-paris", "c-odc-00"), fail_node=fail_node,
                         fail_link=fail_link, restore=restore)
    out = io.StringIO()
    NetemuCLI(em, stdin=io.StringIO("fail sat-0-1 2.5\nfail mars\nfaillink sat-0-1 g-relay-x\nfaillink x\n"
                                    "restore sat-0-1\nrestore\n"), stdout=out).cmdloop()
    assert calls == [("fail_node", "sat-0-1", 2.5), ("fail_link", "sat-0-1", "g-relay-x", None),
                     ("restore", "sat-0-1", None), ("restore", None, None)]
    text = out.getvalue()
    assert "failed node sat-0-1 at t = 12.500 s" in text and "routes move at t = 12.600 s" in text
    assert "*** unknown node 'mars'" in text and "usage: faillink A B" in text
    assert "restored sat-0-1" in text


def test_reboot_command_calls_the_injector():
    from netemu.emulate.inject import InjectError
    calls = []

    def reboot(name, reboot_s=None):
        if name not in LOOPBACKS:
            raise InjectError(f"unknown node {name!r}")
        calls.append((name, reboot_s))
        return {"kind": "reboot", "target": name, "t_s": 12.5, "links": 4, "apply_ms": 0.2, "reroute_due_s": 12.6}

    net = SimpleNamespace(nameToNode={n: _Node(n, []) for n in LOOPBACKS})
    em = SimpleNamespace(net=net, loopbacks=LOOPBACKS, endpoints=("g-paris", "c-odc-00"), reboot=reboot)
    out = io.StringIO()
    NetemuCLI(em, stdin=io.StringIO("reboot sat-0-1 2.5\nreboot sat-0-1\nreboot mars\nreboot\n"), stdout=out).cmdloop()
    assert calls == [("sat-0-1", 2.5), ("sat-0-1", None)]
    text = out.getvalue()
    assert "rebooting node sat-0-1 at t = 12.500 s" in text and "routes move at t = 12.600 s" in text
    assert "*** unknown node 'mars'" in text and "usage: reboot NODE [REBOOT_S]" in text
