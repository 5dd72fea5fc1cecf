"""Users' own programs in the nodes (`[[apps]]` in a scenario): what to run where and when (pure).

An app is a command line (a list of arguments: never run through a shell) run inside a node,
or inside every node of a satellite group, from `start_s` to `stop_s` (scenario seconds). Its
arguments may hold placeholders, substituted per node when the run starts it:

- `{node}`: the node's name;
- `{loopback}`: the node's own address (its loopback);
- `{addr:NAME}`: the address of node NAME (an endpoint: routes lead to endpoints only);
- `{{` and `}}`: literal braces.

    [[apps]]
    name = "server"
    node = "c-odc-00"
    command = "python3 -m http.server 8080 --bind {loopback}"
    [[apps]]
    name = "fetch"
    node = "g-beijing"
    command = ["curl", "-s", "http://{addr:c-odc-00}:8080/"]
    start_s = 5
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["App", "placeholders", "expand_command", "PlaceholderError", "APP_NAME_RE"]

APP_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class App:
    """A program to run in `nodes` (one, or every node of `group`): `command` (arguments, with
    placeholders), from `start_s` to `stop_s` (scenario s; None: to the run's end). At `stop_s`
    it gets SIGTERM (and SIGKILL 2 s wall later if still running)."""

    name: str
    nodes: tuple[str, ...]
    command: tuple[str, ...]
    start_s: float = 0.0
    stop_s: float | None = None
    group: str | None = None


class PlaceholderError(ValueError):
    """A malformed or unknown placeholder in a command argument (the message says which)."""


def placeholders(arg: str) -> list[tuple[str, str | None]]:
    """The placeholders of one argument as (kind, NAME or None): ("node", None),
    ("loopback", None), ("addr", NAME). Raises PlaceholderError for anything else."""
    out = []
    for m in _TOKEN.finditer(arg):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise PlaceholderError(f"expected {tok * 2} for a literal brace, found a lone {tok!r} in {arg!r}")
        body = m.group(1)
        if body in ("node", "loopback"):
            out.append((body, None))
        elif body.startswith("addr:") and body[5:]:
            out.append(("addr", body[5:]))
        else:
            raise PlaceholderError(f"unknown placeholder {tok!r} in {arg!r}; expected {{node}}, {{loopback}} or "
                                   f"{{addr:NAME}}")
    return out


def expand_command(command: Iterable[str], node: str, address_of: Callable[[str], str]) -> list[str]:
    """`command` for `node`: placeholders replaced ({node}, {loopback} = address_of(node),
    {addr:NAME} = address_of(NAME)), literal braces unescaped; one argument stays one argument.

    >>> expand_command(["ping", "{addr:b}", "-I", "{loopback}"], "a", {"a": "10.0.0.1", "b": "10.0.0.2"}.get)
    ['ping', '10.0.0.2', '-I', '10.0.0.1']
    """
    def one(m: re.Match) -> str:
        tok = m.group(0)
        if tok in ("{{", "}}"):
            return tok[0]
        body = m.group(1)
        if body == "node":
            return node
        if body == "loopback":
            return address_of(node)
        return address_of(body[5:])

    out = []
    for arg in command:
        placeholders(arg)          # malformed ones raise
        out.append(_TOKEN.sub(one, arg))
    return out
