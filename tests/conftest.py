from pathlib import Path

import pytest

import netemu

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TOPOLOGIES = ROOT / "topologies"


@pytest.fixture(scope="session")
def small_scenario():
    return netemu.load_scenario(DATA / "small.toml")


@pytest.fixture(scope="session")
def small_plan(small_scenario):
    return netemu.make_plan(small_scenario, workers=2)


def write_scenario(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


ROOT_TOOLS = ("ip", "ping", "iperf3", "tc")


def _root_problem() -> str | None:
    import os
    import shutil
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    missing = [t for t in ROOT_TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian: iproute2 iputils-ping iperf3)"
    return None


@pytest.fixture(scope="session")
def root_env():
    """Emulation tests need root and kernel features. In CI a missing prerequisite fails."""
    import os
    problem = _root_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"emulation prerequisites missing in CI: {problem}")
        pytest.skip(problem)


@pytest.fixture
def netns(root_env):
    from netemu.emulate.netns import Namespaces
    with Namespaces() as ns:
        yield ns
