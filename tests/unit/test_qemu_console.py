"""The guest watcher reads its console incrementally: what it looks for is found however
the console's writes were split (the guest here is never started; only its console file
is written, as QEMU would)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_router_sctp.errors import VMError
from kube_router_sctp.vm.qemu import Guest, Machine

STALL = b"[  42.000001] rcu: INFO: rcu_sched self-detected stall on CPU\n"


def guest(tmp_path: Path) -> Guest:
    g = Guest(Machine(kernel=tmp_path / "vmlinuz", append="console=ttyS0"), tmp_path, "watched")
    g.console_log.write_bytes(b"")
    return g


def test_a_stall_split_across_two_writes_is_seen(tmp_path: Path) -> None:
    g = guest(tmp_path)
    with g.console_log.open("ab") as console:
        console.write(b"booting\n" * 10_000 + STALL[:30])
        console.flush()
        with pytest.raises(VMError, match="never started"):
            g.check_alive("boot")  # half a stall line is not a stall
        console.write(STALL[30:])
    with pytest.raises(VMError, match="stalled before it could boot .*rcu_sched self-detected stall"):
        g.check_alive("boot")


def test_a_stall_after_many_quiet_looks_is_seen(tmp_path: Path) -> None:
    g = guest(tmp_path)
    for _ in range(50):
        with g.console_log.open("ab") as console:
            console.write(b"[    1.0] a quiet line of boot messages\n" * 100)
        with pytest.raises(VMError, match="never started"):
            g.check_alive("boot")
    with g.console_log.open("ab") as console:
        console.write(b"noise " + STALL)
    with pytest.raises(VMError, match="stalled"):
        g.check_alive("boot")


def test_a_clean_console_is_not_a_stall(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.console_log.write_bytes(b"rcu: Hierarchical RCU implementation.\n" * 1000)
    with pytest.raises(VMError, match="never started"):
        g.check_alive("boot")
