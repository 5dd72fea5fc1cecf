"""Dispatch policies choose as specified (netemu/plan/dispatch.py)."""

import itertools

import numpy as np
import pytest

from netemu.plan.dispatch import DISPATCH_POLICIES, choose_server

# name, hops, busy, slots, sunlit, soc
CANDIDATES = [
    ("c00", 1, 30, 32, False, 40.0),   # nearest, nearly full, in shadow, low charge
    ("c01", 3, 2, 32, True, 80.0),     # least loaded (6 %), sunlit, far
    ("c02", 2, 20, 32, True, 70.0),    # sunlit and nearer than c01
    ("c03", 4, 16, 32, False, 95.0),   # highest charge
]
EXPECTED = {"nearest": "c00", "least-loaded": "c01", "sunlit-first": "c02", "power-aware": "c03"}


def _choose(policy, cands):
    names, hops, busy, slots, lit, soc = zip(*cands)
    i = choose_server(policy, list(names), hops, busy, slots, lit, soc)
    return None if i is None else names[i]


@pytest.mark.parametrize("policy", DISPATCH_POLICIES)
def test_each_policy_chooses_as_specified_whatever_the_order(policy):
    for perm in itertools.permutations(CANDIDATES):
        assert _choose(policy, perm) == EXPECTED[policy]


def test_ties_are_broken_as_documented():
    same = [("c05", 2, 4, 32, True, 50.0), ("c02", 2, 4, 32, True, 50.0), ("c09", 2, 4, 32, True, 50.0)]
    for policy in DISPATCH_POLICIES:
        for perm in itertools.permutations(same):
            assert _choose(policy, perm) == "c02"          # all equal: the first name
    # nearest: equal hops → the lighter load
    assert _choose("nearest", [("a", 1, 9, 32, True, 50.0), ("b", 1, 3, 32, True, 50.0)]) == "b"
    # least-loaded: equal share of busy slots → fewer hops
    assert _choose("least-loaded", [("a", 3, 8, 32, True, 50.0), ("b", 2, 4, 16, True, 50.0)]) == "b"
    # sunlit-first: no sunlit satellite → nearest of those in shadow; sunlit fraction 0.5 is sunlit
    assert _choose("sunlit-first", [("a", 3, 0, 32, 0.0, 50.0), ("b", 2, 9, 32, 0.2, 50.0)]) == "b"
    assert _choose("sunlit-first", [("a", 3, 0, 32, 0.5, 50.0), ("b", 2, 9, 32, 0.49, 50.0)]) == "a"
    # power-aware: equal charge → fewer hops
    assert _choose("power-aware", [("a", 3, 0, 32, True, 90.0), ("b", 1, 9, 32, True, 90.0)]) == "b"


def test_refusing_satellites_are_avoided_unless_all_refuse():
    cands = [("c00", 1, 0, 0, True, 10.0), ("c01", 5, 31, 32, False, 30.0)]
    for policy in DISPATCH_POLICIES:
        assert _choose(policy, cands) == "c01"
    all_refuse = [("c00", 1, 0, 0, True, 10.0), ("c01", 5, 0, 0, False, 15.0)]
    assert _choose("nearest", all_refuse) == "c00"
    assert _choose("power-aware", all_refuse) == "c01"


def test_no_candidates_and_bad_input():
    assert choose_server("nearest", [], [], [], [], [], []) is None
    with pytest.raises(ValueError, match="nearest, least-loaded"):
        choose_server("random", ["a"], [1], [0], [1], [True], [50.0])
    with pytest.raises(ValueError, match="expected 2 values"):
        choose_server("nearest", ["a", "b"], [1], [0, 0], [1, 1], [True, True], [50.0, 50.0])
