"""Progress output: one line per step with its duration, folded into groups on CI.

All human-facing output goes to stderr so that stdout stays clean for data
(``render`` prints the Dockerfile, ``--json`` outputs print JSON).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def _stream() -> TextIO:
    return sys.stderr


def _on_github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def info(message: str) -> None:
    if not _quiet:
        print(f"    {message}", file=_stream(), flush=True)


def detail(message: str) -> None:
    """Raw tool output (build logs, tables), indented under the current step."""
    if not _quiet:
        for line in message.rstrip("\n").splitlines():
            print(f"    | {line}", file=_stream(), flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=_stream(), flush=True)


def loud(message: str) -> None:
    """A warning nobody should miss (skipped safety checks)."""
    bar = "!" * min(100, max(40, len(message) + 4))
    print(f"{bar}\n! {message}\n{bar}", file=_stream(), flush=True)


def error(message: str) -> None:
    print(f"kube-router-sctp: error: {message}", file=_stream(), flush=True)


@contextmanager
def step(name: str, what: str = "") -> Iterator[None]:
    """Announce a step, time it, and say how it ended."""
    title = f"{name}: {what}" if what else name
    if _on_github():
        print(f"::group::{title}", file=_stream(), flush=True)
    elif not _quiet:
        print(f"==> {title}", file=_stream(), flush=True)
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        took = time.monotonic() - start
        if _on_github():
            print("::endgroup::", file=_stream(), flush=True)
        if ok and not _quiet:
            print(f"<== {name} done in {took:.1f}s", file=_stream(), flush=True)
        elif not ok:
            print(f"<== {name} FAILED after {took:.1f}s", file=_stream(), flush=True)


class Progress:
    """A byte-count progress bar, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._enabled = _stream().isatty() and not _quiet
        self._last = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self._enabled and now - self._last > 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        mib = self.done / 1048576
        if self.total:
            share = min(1.0, self.done / self.total)
            bar = "#" * int(share * 30)
            text = f"\r    {self.label} [{bar:<30}] {mib:.1f}/{self.total / 1048576:.1f} MiB"
        else:
            text = f"\r    {self.label} {mib:.1f} MiB"
        _stream().write(text)
        _stream().flush()

    def close(self) -> None:
        if self._enabled:
            self._draw()
            _stream().write("\n")
            _stream().flush()
