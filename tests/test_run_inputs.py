"""Bad run inputs (output directory, probe rate): each is one clear error line, exit code 2, no
traceback, and nothing left behind (no namespaces, no registry entry, no new directory)."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netemu.emulate.netns import list_netemu_namespaces, list_runs
from netemu.rundir import OutputError, atomic_write, check_out_dir, prepare_out_dir
from conftest import DATA, ROOT


def _leftovers(pid: int | None = None) -> tuple:
    """Namespaces not of a live run (another run may be live meanwhile), and registry entries of
    process `pid`."""
    runs = list_runs()
    live = {e["id"] for e in runs if e["alive"]}
    stray = tuple(n for n in list_netemu_namespaces() if n.split("-")[1] not in live)
    return stray, tuple(e["id"] for e in runs if pid is not None and e.get("pid") == pid)


def _tree(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


@pytest.fixture
def tmpfs(tmp_path, root_env):
    """Mount a 1 MiB tmpfs at tmp_path/fs with the given options; unmounted afterwards."""
    mounted = []

    def mount(opts: str) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,{opts}", "tmpfs", str(d)], check=True)
        mounted.append(d)
        return d
    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def _file(tmp_path, tmpfs):
    f = tmp_path / "a-file"
    f.write_text("not a directory\n")
    return f, ["-o", str(f)], "is a file"


def _read_only(tmp_path, tmpfs):
    d = tmpfs("ro")                      # as root, permission bits would not stop the write
    return d / "out", ["-o", str(d / "out")], "read-only"


def _full(tmp_path, tmpfs):
    d = tmpfs("rw")
    subprocess.run(["dd", "if=/dev/zero", f"of={d / 'filler'}", "bs=64k"], capture_output=True)
    return d / "out", ["-o", str(d / "out")], "full"


def _probe_rate(tmp_path, tmpfs):
    return tmp_path / "out", ["-o", str(tmp_path / "out"), "--probe-rate", "1e9"], "--probe-rate"


def _foreign(tmp_path, tmpfs):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("keep me\n")
    return d, ["-o", str(d)], "not empty and holds no netemu run"


def _earlier_run(tmp_path, tmpfs):
    d = tmp_path / "run1"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"scenario": "small"}) + "\n")
    (d / "jobs.csv").write_text("job\n1\n")
    return d, ["-o", str(d)], "--overwrite"


ROWS = [
    pytest.param(_file, id="o-is-a-file"),
    pytest.param(_read_only, id="o-read-only-fs", marks=pytest.mark.root),
    pytest.param(_full, id="o-full-fs", marks=pytest.mark.root),
    pytest.param(_probe_rate, id="probe-rate-1e9"),
    pytest.param(_foreign, id="o-foreign-non-empty"),
    pytest.param(_earlier_run, id="o-earlier-run-no-overwrite"),
]


# every row for both commands, but --probe-rate, which only `run` has
CASES = [pytest.param(command, *row.values, id=f"{command}-{row.id}", marks=row.marks)
         for command in ("run", "replay") for row in ROWS if not (command == "replay" and row.values[0] is _probe_rate)]


@pytest.mark.parametrize("command, make", CASES)
def test_bad_run_input_is_one_line_exit_2_nothing_left(make, command, tmp_path, request):
    mount = request.getfixturevalue("tmpfs") if make in (_read_only, _full) else None
    out, args, expected = make(tmp_path, mount)
    before_tree, before = _tree(out), _leftovers()
    cmd = [sys.executable, "-m", "netemu", command, str(DATA / "small.toml")]
    if command == "replay":
        cmd.append(str(ROOT / "traces" / "inference.pcap"))
    p = subprocess.Popen(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    stdout, stderr = p.communicate(timeout=120)
    r = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and expected in errors[0], r.stderr
    if "--probe-rate" not in args:      # argparse adds its usage line; every other check is one line
        assert r.stderr.count("\n") == 1, r.stderr
    assert _tree(out) == before_tree and _leftovers(p.pid) == (before[0], ())


def test_overwrite_replaces_an_earlier_run_only(tmp_path):
    old = tmp_path / "run1"
    (old / "workloads").mkdir(parents=True)
    (old / "run.json").write_text("{}\n")
    (old / "jobs.csv").write_text("job\n")
    (old / "workloads" / "g.jsonl").write_text("{}\n")
    check_out_dir(old, overwrite=True)
    prepare_out_dir(old, overwrite=True)
    assert old.is_dir() and not any(old.iterdir())     # nothing of the old run is left to mix
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x\n")
    with pytest.raises(OutputError, match="holds no netemu run"):
        check_out_dir(foreign, overwrite=True)
    assert (foreign / "data.csv").exists()
    # a plan directory is rewritten by `netemu plan` (same files), but a run needs --overwrite
    plan = tmp_path / "plan"
    plan.mkdir()
    for f in ("summary.json", "nodes.csv", "scenario.toml"):
        (plan / f).write_text("x\n")
    check_out_dir(plan, for_plan=True)
    with pytest.raises(OutputError, match="earlier netemu plan"):
        check_out_dir(plan)
    with pytest.raises(OutputError, match="earlier netemu run"):
        check_out_dir(_with_run(tmp_path), for_plan=True)


def _with_run(tmp_path: Path) -> Path:
    d = tmp_path / "run2"
    d.mkdir()
    (d / "run.json").write_text("{}\n")
    return d


def test_atomic_write_leaves_no_truncated_file(tmp_path):
    target = tmp_path / "probes.parquet"
    target.write_text("the previous, complete content\n")

    def fails(tmp: Path) -> None:
        tmp.write_text("half of it")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError):
        atomic_write(target, fails)
    assert target.read_text() == "the previous, complete content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probes.parquet"]
    atomic_write(tmp_path / "new.txt", lambda tmp: tmp.write_text("done\n"))
    assert (tmp_path / "new.txt").read_text() == "done\n"


def test_report_failure_after_a_run_is_one_clear_error(tmp_path, monkeypatch):
    import netemu.runner
    from netemu.runner import _report

    def full(out, progress=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(netemu.runner, "build_report", full)
    with pytest.raises(OutputError, match=r"results are written, but report.html could not be: No space left"):
        _report(tmp_path, lambda m: None)


def test_plan_refuses_a_file_and_a_foreign_directory(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("x")
    for out, expected in ((f, "is a file"), (d, "holds no netemu run")):
        r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(DATA / "small.toml"), "-o", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and expected in r.stderr, r.stderr


def test_report_bug_after_a_run_is_one_clear_error(tmp_path, monkeypatch):
    import netemu.runner
    from netemu.runner import _report

    def bug(out, progress=None):
        raise ValueError("cannot reindex on an axis with duplicate labels")
    monkeypatch.setattr(netemu.runner, "build_report", bug)
    with pytest.raises(OutputError, match=r"results are written, but report.html could not be: ValueError"):
        _report(tmp_path, lambda m: None)
