"""Faults: parsing and the reorder plan."""

from __future__ import annotations

import pytest
from stemdaq.errors import ConfigError
from stemdaq.sim import Faults


def test_parse_full_cli_string() -> None:
    spec = "drop=3,7;duplicate=5;reorder=10;corrupt=12;truncate=14;wrong_series=20;"
    spec += "abort_after=50;no_end"
    f = Faults.parse(spec)
    assert f.drop == {3, 7} and f.duplicate == {5} and f.reorder == {10}
    assert f.corrupt == {12} and f.truncate == {14} and f.wrong_series == {20}
    assert f.abort_after == 50 and f.no_end
    assert Faults.parse(str(f)) == f


def test_parse_ranges_spaces_and_empty() -> None:
    assert Faults.parse(" drop = 2-4 ; malformed=9 ").drop == {2, 3, 4}
    assert not Faults.parse(None) and not Faults.parse("")
    f = Faults(drop=frozenset({1}))
    assert Faults.parse(f) is f


@pytest.mark.parametrize(
    "bad", ["explode=3", "drop", "drop=x", "drop=5-2", "abort_after=-1", "no_end=7"]
)
def test_parse_errors_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        Faults.parse(bad)


def test_reorder_swaps_with_next_in_batch_only() -> None:
    f = Faults.parse("reorder=2,5")
    assert f.order([0, 1, 2, 3, 4, 5]) == [0, 1, 3, 2, 4, 5]  # 5 has no successor here
    assert Faults().order([0, 1, 2]) == [0, 1, 2]
