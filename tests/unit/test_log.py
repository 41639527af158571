"""Output: every line cleaned of control sequences and credentials; -q, default and -v;
the log file; annotations under GitHub Actions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_router_sctp import log


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    yield
    log.set_level(log.NORMAL)
    log.close_log()
    log.set_log_dir(None)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m plain", "red plain"),
        ("\x1b[1;32;40mbold\x1b[K", "bold"),
        ("title\x1b]0;owned\x07 after", "title after"),
        ("link \x1b]8;;http://x\x1b\\text\x1b]8;;\x1b\\", "link text"),
        ("bell\x07 backspace\x08", "bell\\x07 backspace\\x08"),
        ("progress 10%\rprogress 20%", "progress 10%\nprogress 20%"),
        ("crlf\r\n", "crlf\n"),
        ("c1 \x9b31m csi", "c1  csi"),
        ("bidi \u202eevil", "bidi \\u202eevil"),
        ("marks \u200f\u200e\u061c", "marks \\u200f\\u200e\\u061c"),  # RLM, LRM, ALM reorder text too
        ("line\u2028separator\u2029", "line\\u2028separator\\u2029"),  # line breaks to some readers
        ("zero\u200bwidth\ufeff\u2060", "zero\\u200bwidth\\ufeff\\u2060"),
        ("tab\tand newline\n kept", "tab\tand newline\n kept"),
        ("https://user:pw@host/x", "https://***@host/x"),
        ("name\udcff.ko", "name\\udcff.ko"),  # a file name's undecodable byte (surrogateescape)
    ],
)
def test_clean(raw: str, shown: str) -> None:
    assert log.clean(raw) == shown
    log.clean(raw).encode()  # anything clean can be written to a UTF-8 log file


def test_levels(capsys: pytest.CaptureFixture[str]) -> None:
    for level in (log.QUIET, log.NORMAL, log.VERBOSE):
        log.set_level(level)
        with log.step("build", "x"):
            log.info("an info line")
            log.stream("Get:1 http://mirror.example bookworm InRelease\n")
        log.warn("a warning")
        err = capsys.readouterr().err
        assert ("an info line" in err) == (level >= log.NORMAL)
        assert ("<== build done" in err) == (level >= log.NORMAL)
        assert ("Get:1" in err) == (level >= log.VERBOSE)  # apt lines only with -v
        assert "warning: a warning" in err


def test_failed_step_and_errors_show_when_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    log.set_level(log.QUIET)
    with pytest.raises(RuntimeError), log.step("build"):
        raise RuntimeError("x")
    log.error("it broke")
    err = capsys.readouterr().err
    assert "<== build FAILED" in err and "kube-router-sctp: error: it broke" in err


def test_the_log_file_holds_everything_and_appears_only_with_tool_output(tmp_path: Path) -> None:
    log.set_log_dir(tmp_path / "logs")
    log.set_level(log.QUIET)
    with log.step("render"):
        log.info("nothing streamed yet")
    assert log.log_path() is None  # a run that streamed nothing leaves no file
    log.stream("\x1b[31mStep 1/2 : RUN apt-get update\x1b[0m\n")
    path = log.log_path()
    assert path is not None and path.parent == tmp_path / "logs"
    log.close_log()
    text = path.read_text()
    assert "==> render" in text and "nothing streamed yet" in text
    assert "Step 1/2 : RUN apt-get update" in text and "\x1b" not in text


def test_github_annotations_and_no_injected_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    log.warn("disk low\n::set-output name=x::y")
    log.error("it broke at 100%")
    log.info("::add-mask::hidden")
    log.set_level(log.VERBOSE)
    log.stream("::error::from a build step\n")
    lines = capsys.readouterr().err.splitlines()
    commands = [line for line in lines if line.lstrip().startswith("::")]
    assert commands == ["::warning::disk low%0A::set-output name=x::y", "::error::it broke at 100%25"]
    assert "kube-router-sctp: error: it broke at 100%" in lines  # the plain line stays


def test_a_log_file_that_cannot_be_written_does_not_stop_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log.set_log_dir(tmp_path / "logs")
    log.stream("first line\n")

    class Full:
        def write(self, _text: str) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    monkeypatch.setattr(log, "_log_file", Full())
    log.stream("second line\n")  # no exception
    log.info("the run goes on")
    err = capsys.readouterr().err
    assert "stopped here (No space left on device)" in err and "the run goes on" in err
