"""The interactive shell of a live run (`netemu run --cli`): Mininet's CLI, for netemu's nodes.

As in Mininet, `<node> <command>` runs the command inside that node, and node names among the
command's words become the nodes' addresses (here their loopbacks, the addresses routes lead
to), so `g-paris ping -c 3 c-odc-00` pings the compute satellite from Paris. `fail NODE [S]`,
`faillink A B [S]`, `reboot NODE [S]` and `restore [NODE [B]]` inject live faults (emulate.inject). Every node of the
network answers to its name, relays and satellites included, and names may hold '-' (Mininet's
parser would end a name there). Routes lead to the endpoints only (as the plan's do): a relay
runs commands and forwards, but other nodes cannot reach its loopback (the shell says so). `exit`, `quit` or end of input leave the shell; the run then
ends normally and writes its results.
"""

from __future__ import annotations

import re
import sys
from select import POLLIN, poll
from cmd import Cmd
from typing import TextIO

from ..errors import EmulationError, NetemuError

__all__ = ["NetemuCLI", "substitute_loopbacks"]

_WORD = re.compile(r"\S+")


def substitute_loopbacks(command: str, loopbacks: dict[str, str]) -> str:
    """`command` with every word that is a node name replaced by that node's loopback
    address (words are whitespace-separated; spacing and other words are kept as written)."""
    return _WORD.sub(lambda m: loopbacks.get(m.group(0), m.group(0)), command)


def _cli_base():
    try:
        from mininet.cli import CLI   # lazy: Mininet only when a shell is opened
    except ImportError as e:
        raise EmulationError(f"Mininet's Python module is missing ({e}); install it with "
                             "`pip install mininet==2.3.0.dev6` (make setup does)") from None
    return CLI


class NetemuCLI(_cli_base()):
    """Mininet's CLI over a live `Emulation` (anything with `net`, a Mininet whose `nameToNode`
    holds every node, and `loopbacks`, name → address). Reads commands from `stdin` until
    exit/quit/end of input (`cmdloop()`, or construct with `run=True`)."""

    prompt = "netemu> "

    def __init__(self, em, stdin: TextIO | None = None, stdout: TextIO | None = None, run: bool = False):
        stdin = sys.stdin if stdin is None else stdin
        self.em = em
        self.mn = em.net
        self.nodes = em.net.nameToNode          # endpoints and relays alike (Mininet's hosts are the endpoints)
        self.loopbacks = dict(em.loopbacks)
        self.endpoints = set(getattr(em, "endpoints", self.nodes))
        self.locals = {"net": em.net, "em": em}
        # Mininet's CLI.__init__ would start reading at once and needs a terminal-like stdin;
        # set up what its methods use instead.
        Cmd.__init__(self, stdin=stdin, stdout=stdout)
        self.use_rawinput = stdin is sys.stdin      # line editing at a terminal; else read stdin
        self.inPoller = None
        try:
            stdin.fileno()
            self.inPoller = poll()
            self.inPoller.register(stdin, POLLIN)
        except (AttributeError, OSError, ValueError):
            pass                                    # not a file: commands run without keyboard input
        self.inputFile = None
        if run:
            self.run()

    # ------------------------------------------------------------------ parsing

    def parseline(self, line: str):
        """(first word, the rest, line). The first word ends at whitespace only: node names hold
        '-', where cmd.Cmd's parser (identifier characters) would end it."""
        line = line.strip()
        if not line:
            return None, None, line
        if line[0] == "?":
            line = "help " + line[1:]
        elif line[0] == "!":
            line = "sh " + line[1:]
        first, _, rest = line.partition(" ")
        return first, rest.strip(), line

    def onecmd(self, line: str):
        first, rest, line = self.parseline(line)
        if first in self.nodes and (rest or not hasattr(self, "do_" + first)):
            self.lastcmd = line
            return self.default(line)
        return super().onecmd(line)

    def default(self, line: str):
        first, rest, line = self.parseline(line)
        if first not in self.nodes:
            self._say(f"*** Unknown command: {line} (node names: `nodes`; commands: `help`)\n")
            return None
        if not rest:
            self._say(f"*** Please enter a command for node {first}: {first} <command>\n")
            return None
        relays = [w for w in rest.split() if w in self.nodes and w not in self.endpoints]
        if relays:   # say why a ping to a relay goes unanswered
            self._say(f"*** note: routes lead to endpoints only; {', '.join(relays)} (not an endpoint) cannot be "
                      "reached from other nodes\n")
        self.run_in(first, substitute_loopbacks(rest, self.loopbacks))
        return None

    def isatty(self) -> bool:
        try:
            return super().isatty()
        except (AttributeError, OSError, ValueError):
            return False

    # ------------------------------------------------------------------ running

    def run_in(self, name: str, command: str) -> None:
        """Run `command` in node `name`, showing its output as it comes (keyboard input goes
        to it when stdin is a terminal or a pipe)."""
        node = self.nodes[name]
        if self.inPoller is not None:
            node.sendCmd(command)
            self.waitForNode(node)
        else:
            self._say(node.cmd(command))

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    # ------------------------------------------------------------------ commands over every node

    def do_nodes(self, _line: str) -> None:
        """List every node: endpoints, then relays (satellites and ground relays)."""
        eps = [n for n in self.nodes if n in self.endpoints]
        relays = sorted(n for n in self.nodes if n not in self.endpoints)
        self._say(f"endpoints: {' '.join(sorted(eps))}\nrelays: {' '.join(relays)}\n")

    def do_now(self, _line: str) -> None:
        """Print the emulated time (s) the constellation is at."""
        if hasattr(self.em, "now_t_s"):
            self._say(f"t = {self.em.now_t_s():.3f} s\n")

    # ------------------------------------------------------------------ live faults (emulate.inject)

    def _inject(self, what: str, fn, *args) -> None:
        try:
            rows = fn(*args)
        except NetemuError as e:
            self._say(f"*** {e}\n")
            return
        for r in rows if isinstance(rows, list) else [rows]:
            due = f"; routes move at t = {r['reroute_due_s']:.3f} s" if r["kind"] != "restore" else ""
            self._say(f"{what} {r['target']} at t = {r['t_s']:.3f} s ({r['links']} links, in the engine in "
                      f"{r['apply_ms']:.3f} ms){due}\n")

    def _words(self, line: str, lo: int, hi: int, usage: str):
        words = line.split()
        if not lo <= len(words) <= hi:
            self._say(f"*** usage: {usage}\n")
            return None
        return words

    @staticmethod
    def _duration(word: str | None):
        try:
            return None if word is None else float(word)
        except ValueError:
            return word      # the injector says what it expected

    def do_fail(self, line: str) -> None:
        """fail NODE [DURATION_S]: fail a node now (all its links; routes around it after the detection delay)."""
        w = self._words(line, 1, 2, "fail NODE [DURATION_S]")
        if w:
            self._inject("failed node", self.em.fail_node, w[0], self._duration(w[1] if len(w) > 1 else None))

    def do_faillink(self, line: str) -> None:
        """faillink A B [DURATION_S]: fail the link between nodes A and B now."""
        w = self._words(line, 2, 3, "faillink A B [DURATION_S]")
        if w:
            self._inject("failed link", self.em.fail_link, w[0], w[1], self._duration(w[2] if len(w) > 2 else None))

    def do_reboot(self, line: str) -> None:
        """reboot NODE [REBOOT_S]: reboot a node now (dark, routes around it after the detection delay;
        back after REBOOT_S, default the scenario's, then its links re-acquire)."""
        w = self._words(line, 1, 2, "reboot NODE [REBOOT_S]")
        if w:
            self._inject("rebooting node", self.em.reboot, w[0], self._duration(w[1] if len(w) > 1 else None))

    def do_restore(self, line: str) -> None:
        """restore [NODE [B]]: end every live fault, node NODE's, or link NODE-B's."""
        w = self._words(line, 0, 2, "restore [NODE [B]]")
        if w is not None:
            self._inject("restored", self.em.restore, *w)

    def getLocals(self) -> dict:
        self.locals.update(self.nodes)
        return self.locals
