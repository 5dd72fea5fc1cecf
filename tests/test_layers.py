"""The import rule between netemu's wings, read from the source with `ast` (function-level imports
included): plan ← emulate ← traffic, with runner, cli and report on top.

A failure names file:line, the import and the rule it breaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "netemu"

# what each part of the package may import from netemu (besides itself)
BASE = {"netemu", "netemu.errors", "netemu.constants"}   # "netemu" = the version
ALLOWED = {
    "plan": BASE,
    "emulate": BASE | {"netemu.plan"},
    "traffic": BASE | {"netemu.plan", "netemu.emulate"},
    "report": BASE | {"netemu.timeview"},
    "timeview": BASE,      # the report's interactive view (reads run directories too)
    "runner": BASE | {"netemu.plan", "netemu.emulate", "netemu.traffic", "netemu.report", "netemu.rundir"},
    "cli": None,       # the top: anything
    "testing": BASE | {"netemu.plan", "netemu.emulate"},
    "rundir": BASE | {"netemu.plan"},
    "errors": set(),
    "constants": set(),
    "__init__": BASE,
    "__main__": {"netemu.cli"},
}
RULES = {"plan": "plan imports only errors, constants and the version",
         "emulate": "emulate may import plan (not traffic, runner, report, cli)",
         "traffic": "traffic may import plan and emulate (not runner, report, cli)",
         "report": "report reads run directories and imports no wing"}
PURE = ["plan", "emulate/playback.py", "emulate/addressing.py", "emulate/clock.py", "traffic/workloads.py",
        "traffic/batching.py", "traffic/trace.py", "traffic/fidelity.py"]
IMPURE = {"subprocess", "socket", "ctypes", "fcntl", "mininet"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    p = PKG.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _imports(path: Path):
    """(line, absolute module name) of every import in `path`, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for a in node.names:          # `from . import engine` names a module too
                if _is_module(f"{target}.{a.name}"):
                    yield node.lineno, f"{target}.{a.name}"


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_wings_exist():
    for wing in ("plan", "emulate", "traffic"):
        assert (PKG / wing / "__init__.py").exists(), f"netemu/{wing}/ is missing"


def test_imports_point_one_way():
    broken = []
    for path in sorted(PKG.rglob("*.py")):
        part = _part(path)
        allowed = ALLOWED.get(part, BASE)
        if allowed is None:
            continue
        own = f"netemu.{part}" if (PKG / part).is_dir() else _module_name(path)
        for line, name in _imports(path):
            if not _under(name, {"netemu"}) or _under(name, {own}) or name == "netemu":
                continue
            if not _is_module(name):
                continue     # `from .x import Name`: the module x is checked on the same line
            if not _under(name, allowed - {"netemu"}):
                rule = RULES.get(part, f"{part} may import only {', '.join(sorted(allowed)) or 'nothing of netemu'}")
                broken.append(f"{path.relative_to(PKG.parent)}:{line}: imports {name}: {rule}")
    assert not broken, "\n".join(broken)


def test_only_cli_imports_runner():
    broken = [f"{p.relative_to(PKG.parent)}:{line}: imports {name}: only cli imports runner"
              for p in sorted(PKG.rglob("*.py")) if p.name not in ("cli.py", "runner.py") and p != PKG / "__init__.py"
              for line, name in _imports(p) if name == "netemu.runner"]
    assert not broken, "\n".join(broken)


def test_pure_modules_touch_no_kernel():
    files = []
    for spec in PURE:
        p = PKG / spec
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.exists() else []
    broken = [f"{p.relative_to(PKG.parent)}:{line}: imports {name}: pure modules import none of "
              f"{', '.join(sorted(IMPURE))}"
              for p in files for line, name in _imports(p) if name.split(".")[0] in IMPURE]
    assert not broken, "\n".join(broken)


def test_the_rule_catches_a_break(tmp_path, monkeypatch):
    """The checker itself: an upward import and a kernel import in a plan module are reported
    with file:line."""
    fake = tmp_path / "netemu"
    (fake / "plan").mkdir(parents=True)
    (fake / "emulate").mkdir()
    for f in ("__init__.py", "errors.py", "runner.py", "plan/__init__.py", "emulate/__init__.py",
              "emulate/links.py"):
        (fake / f).write_text("")
    (fake / "plan" / "bad.py").write_text("import math\n\ndef f():\n    from ..emulate import links\n"
                                          "    import subprocess\n    from .. import runner\n")
    monkeypatch.setitem(globals(), "PKG", fake)
    checks = ((test_imports_point_one_way, "netemu/plan/bad.py:4: imports netemu.emulate.links: plan imports only"),
              (test_pure_modules_touch_no_kernel, "netemu/plan/bad.py:5: imports subprocess"),
              (test_only_cli_imports_runner, "netemu/plan/bad.py:6: imports netemu.runner: only cli"))
    for check, expected in checks:
        try:
            check()
        except AssertionError as e:
            assert expected in str(e), str(e)
        else:
            raise AssertionError(f"{check.__name__} did not report {expected!r}")
