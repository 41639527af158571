"""Progress output: one line per step with its duration, folded into groups on CI.

All human-facing output goes to stderr so that stdout stays clean for data
(``render`` prints the Dockerfile, ``--json`` outputs print JSON); ``out`` writes that data.
Every line, whichever level and stream, passes through ``clean`` first: credentials are
redacted and terminal control sequences from inputs (build output, pax headers, file
names, commit messages) are removed or shown escaped, so no input can recolour, move the
cursor, retitle the terminal or hide text.

Levels: ``-q`` shows warnings, errors and results; the default adds one line per stage
and step with its time (and a live elapsed-time line for long steps on a terminal);
``-v`` also streams the raw output of the tools (the Docker build log). That raw output
always goes to the run's log file, named at the end of the run and in the report. Under
GitHub Actions, steps fold into log groups and warnings and errors also become
``::warning::``/``::error::`` annotations.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from .redact import redact

QUIET, NORMAL, VERBOSE = 0, 1, 2
KEEP_LOGS = 20  # log files kept in the log directory; older ones are removed

_level = NORMAL
_lock = threading.RLock()
_live: _Ticker | None = None
_bars = 0  # byte-count bars being drawn (the live line waits while one is)
_log_dir: Path | None = None
_log_path: Path | None = None
_log_file: TextIO | None = None
_pending: list[str] = []  # lines waiting for the log file
PENDING_LINES = 5000

# ESC-introduced sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks; ended
# by BEL or ST), DCS/SOS/PM/APC strings, and two-character escapes.
_ESCAPE_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# Characters no input may bring to a terminal, a log or a rendered file as they are: C0
# (tab and newline are allowed where lines are printed, never in a value), DEL, C1, and the
# invisible ones that change what a reader sees: bidirectional marks, embeddings,
# overrides and isolates (U+061C, U+200E/F, U+202A-E, U+2066-9), Unicode line and
# paragraph separators (line breaks to some parsers), zero-width characters and the BOM.
INVISIBLE = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
UNPRINTABLE = f"\x00-\x1f\x7f-\x9f{INVISIBLE}"  # the body of a character class
# Lone surrogates (a hostile file name decoded with surrogateescape) too: no encoder
# of a log file or terminal takes them.
_CONTROL_RE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{INVISIBLE}\ud800-\udfff]")


def clean(text: str) -> str:
    """``text`` safe to print: credentials redacted, escape sequences removed, any other
    control character shown as an escape (``\\x07``). Carriage returns end lines."""
    text = _ESCAPE_RE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)
    return redact(text)


def last_line(text: str, limit: int = 300) -> str:
    """The last non-blank line of a tool's output, cut to ``limit``: what an error quotes."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else "no output"


def set_level(level: int) -> None:
    global _level
    _level = level


def set_quiet(quiet: bool) -> None:
    set_level(QUIET if quiet else NORMAL)


def level() -> int:
    return _level


def _stream() -> TextIO:
    return sys.stderr


def _on_github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _annotation(kind: str, message: str) -> str:
    # Workflow commands end at a newline; GitHub's own escapes keep the message one command.
    escaped = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{kind}::{escaped}"


# -- the log file ------------------------------------------------------------------------
def set_log_dir(directory: Path | None) -> None:
    """Where this run's log file goes (created at the first line written to it)."""
    global _log_dir
    _log_dir = directory


def log_path() -> Path | None:
    """The run's log file, if anything was written to it."""
    return _log_path


def close_log() -> None:
    global _log_file, _log_path
    with _lock:
        if _log_file is not None:
            _log_file.close()
        _log_file = None
        _log_path = None
        _pending.clear()


def _to_file(text: str, *, opens: bool = False) -> None:
    """Keep a line for the log file. The file is made only once a tool's raw output
    arrives (``opens``); the lines before it wait in memory, so a run that streamed
    nothing (``render``, ``config``) leaves no file behind."""
    global _log_file, _log_path
    if _log_dir is None:
        return
    line = text if text.endswith("\n") else text + "\n"
    with _lock:
        if _log_file is None:
            if not opens:
                _pending.append(line)
                del _pending[:-PENDING_LINES]
                return
            try:
                _log_file, _log_path = _open_log(_log_dir)
            except OSError as exc:
                set_log_dir(None)  # the run goes on without a log file rather than failing for it
                warn(f"no log file for this run ({exc.strerror or exc}: {exc.filename or _log_dir})")
                return
            _log_file.writelines(_pending)
            _pending.clear()
        try:
            _log_file.write(line)
            _log_file.flush()
        except OSError as exc:  # a full disk stops the log file, not the run
            path, broken, _log_file = _log_path, _log_file, None
            with contextlib.suppress(OSError):
                broken.close()
            set_log_dir(None)
            warn(f"the log file {path} stopped here ({exc.strerror or exc})")


def _open_log(directory: Path) -> tuple[TextIO, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in directory.glob("*.log") if p.is_file() and not p.is_symlink())
    for stale in old[: max(0, len(old) - KEEP_LOGS + 1)]:
        stale.unlink(missing_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}-{os.getpid()}.log"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace"), path


# -- printing ----------------------------------------------------------------------------
def _emit(text: str, *, show: bool, command: bool = False, opens: bool = False) -> None:
    text = clean(text)
    if _on_github() and not command:
        # The runner reads any line starting with "::" (after blanks) as a workflow command.
        text = "\n".join(f"| {line}" if line.lstrip().startswith("::") else line for line in text.split("\n"))
    with _lock:
        _to_file(text, opens=opens)
        if show:
            if _live is not None:
                _live.clear()
            print(text, file=_stream(), flush=True)


def out(text: str, nl: bool = True) -> None:
    """A result on stdout (data a script may read), cleaned like every other line."""
    text = clean(text)
    with _lock:
        _to_file(text)
        sys.stdout.write(text + ("\n" if nl else ""))
        sys.stdout.flush()


def info(message: str) -> None:
    _emit(f"    {message}", show=_level >= NORMAL)


def notice(message: str) -> None:
    """A line every level shows (where the run's log file is, after a failure)."""
    _emit(f"    {message}", show=True)


def detail(message: str) -> None:
    """Tool output worth showing (tables, the end of a failing step's output), indented."""
    for line in clean(message).rstrip("\n").splitlines():
        _emit(f"    | {line}", show=_level >= NORMAL)


def stream(message: str) -> None:
    """Raw output of a long-running tool (the Docker build log): streamed with ``-v``,
    always kept in the log file."""
    for line in clean(message).rstrip("\n").splitlines():
        _emit(f"    | {line}", show=_level >= VERBOSE, opens=True)


def warn(message: str) -> None:
    _emit(f"warning: {message}", show=True)
    if _on_github():
        _emit(_annotation("warning", clean(message)), show=True, command=True)


def loud(message: str) -> None:
    """A warning nobody should miss (skipped safety checks)."""
    bar = "!" * min(100, max(40, len(message) + 4))
    _emit(f"{bar}\n! {message}\n{bar}", show=True)
    if _on_github():
        _emit(_annotation("warning", clean(message)), show=True, command=True)


def error(message: str) -> None:
    _emit(f"kube-router-sctp: error: {message}", show=True)
    if _on_github():
        _emit(_annotation("error", clean(message)), show=True, command=True)


@contextmanager
def step(name: str, what: str = "") -> Iterator[None]:
    """Announce a step, time it, and say how it ended."""
    global _live
    title = f"{name}: {what}" if what else name
    if _on_github():
        _emit(f"::group::{' '.join(clean(title).split())}", show=True, command=True)
    else:
        _emit(f"==> {title}", show=_level >= NORMAL)
    start = time.monotonic()
    outer = _live
    ticker = _Ticker(name, start) if outer is None and _live_allowed() else None
    if ticker is not None:
        _live = ticker
        ticker.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        if ticker is not None:
            ticker.stop()
            _live = None
        took = time.monotonic() - start
        if _on_github():
            _emit("::endgroup::", show=True, command=True)
        if ok:
            _emit(f"<== {name} done in {took:.1f}s", show=_level >= NORMAL)
        else:
            _emit(f"<== {name} FAILED after {took:.1f}s", show=True)


def _live_allowed() -> bool:
    # A redrawn line needs a terminal, and would garble the streamed output of -v.
    return _level == NORMAL and _stream().isatty() and not _on_github()


class _Ticker:
    """A long step's live line on a terminal: its name and the time so far, redrawn each
    second in place and cleared before any other line is printed."""

    def __init__(self, name: str, start: float) -> None:
        self.name = clean(name)
        self.started = start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._shown = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with _lock:
            self.clear()

    def clear(self) -> None:
        if self._shown:
            _stream().write("\r\x1b[K")
            _stream().flush()
            self._shown = False

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with _lock:
                if self._stop.is_set():
                    return
                if _bars:
                    continue
                _stream().write(f"\r    ... {self.name} {time.monotonic() - self.started:.0f}s")
                _stream().flush()
                self._shown = True


class Progress:
    """A byte-count progress bar, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None) -> None:
        global _bars
        self.label = clean(label)
        self.total = total
        self.done = 0
        self._enabled = _stream().isatty() and _level == NORMAL
        self._last = 0.0
        if self._enabled:
            _bars += 1

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
        with _lock:
            if _live is not None:
                _live.clear()
            _stream().write(text)
            _stream().flush()

    def close(self) -> None:
        global _bars
        if self._enabled:
            self._draw()
            with _lock:
                _stream().write("\n")
                _stream().flush()
                _bars -= 1
            self._enabled = False
