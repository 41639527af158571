"""verify repeats a run once, on a fresh node, when the node's kernel panicked before the
run had a verdict; never for an image's own failure, never twice."""

from __future__ import annotations

from collections.abc import Callable

from kube_router_sctp.verify import PANIC, Run, _once_more_after_a_panic

PANICKED = f"[  134.9] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\n[  134.9] {PANIC}: Fatal exception in interrupt"


def attempts(*outcomes: tuple[str, str]) -> tuple[list[int], Callable[[], Run]]:
    """A stand-in for one run on a node: each call returns the next (error, console)."""
    calls: list[int] = []

    def attempt() -> Run:
        error, console = outcomes[len(calls)]
        calls.append(1)
        run = Run("candidate", "img", error=error)
        if console:
            run.evidence["guest console (end)"] = console
        return run

    return calls, attempt


def test_a_panic_is_run_again_once_and_the_first_console_kept() -> None:
    calls, attempt = attempts(("lost control of the node", PANICKED), ("", ""))
    run = _once_more_after_a_panic(attempt)
    assert len(calls) == 2 and not run.error
    assert PANIC in run.evidence["the first node's kernel panic (the run was repeated once)"]


def test_a_second_panic_stands() -> None:
    calls, attempt = attempts(("lost control", PANICKED), ("lost control again", PANICKED), ("", ""))
    run = _once_more_after_a_panic(attempt)
    assert len(calls) == 2 and run.error == "lost control again"


def test_an_images_own_failure_is_not_run_again() -> None:
    for outcome in (("kube-router did not sync", "[ 3.1] ordinary console"), ("", PANICKED)):
        calls, attempt = attempts(outcome, ("", ""))
        run = _once_more_after_a_panic(attempt)
        assert len(calls) == 1 and run.error == outcome[0]
