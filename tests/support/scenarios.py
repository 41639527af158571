"""Reading `verify --scenarios` results in the tests: the scenarios of a run, and every
part judged against the verdict the catalogue expects of that release."""

from __future__ import annotations

from typing import Any


def scenarios_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["scenario"]: s for s in run["scenarios"]}


def assert_every_part_as_expected(found: dict[str, dict[str, Any]], names: tuple[str, ...]) -> None:
    assert set(found) == set(names), found.keys()
    unexpected = [
        f"{s['scenario']}/{p['part']}: {p['result']} (expected {p['expected']}: {p['expected_reason']}) {p['detail']}"
        for s in found.values()
        for p in s["parts"]
        if not p["met"]
    ]
    assert not unexpected, "\n".join(unexpected)
    for s in found.values():
        assert not s["error"], s["error"]
        assert s["evidence"], s["scenario"]  # tables, conntrack, captures: what decided
