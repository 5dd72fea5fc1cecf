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
