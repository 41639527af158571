"""How much of a container's output the engine keeps (engine.bounded_text): the last
``limit`` bytes, whatever the chunks, the cut said on the first line. The real daemon's
streams: tests/integration/test_engine_boundary.py."""

from __future__ import annotations

import tracemalloc

import pytest

from kube_router_sctp.engine import bounded_text


def test_output_under_the_limit_is_kept_whole() -> None:
    assert bounded_text([b"one\n", b"two\n"], limit=8) == "one\ntwo\n"


@pytest.mark.parametrize("sizes", [[1] * 40, [40], [7, 33], [13, 1, 26]])
def test_only_the_last_whole_lines_are_kept_however_they_come(sizes: list[int]) -> None:
    data = b"line one\nline two\nline three!\nfour\nfive\n"  # 40 bytes
    assert len(data) == 40
    chunks, at = [], 0
    for size in sizes:
        chunks.append(data[at : at + size])
        at += size
    # The last 16 bytes start inside "line three": the rest of that line goes too.
    first, rest = bounded_text(chunks, limit=16).split("\n", 1)
    assert first == "[kube-router-sctp: 30 bytes of output dropped, more than 16 bytes came]"
    assert rest == "four\nfive\n"


def test_a_line_longer_than_the_limit_keeps_its_end() -> None:
    text = bounded_text([b"x" * 100], limit=10)
    assert text == "[kube-router-sctp: 90 bytes of output dropped, more than 10 bytes came]\n" + "x" * 10


def test_memory_stays_under_twice_the_limit_for_many_small_chunks() -> None:
    # Docker sends a log line per frame: 4 MiB of two-byte lines is two million chunks.
    limit = 1 << 20
    tracemalloc.start()
    try:
        text = bounded_text((b"a\n" for _ in range(2 << 20)), limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * limit, peak  # a kept buffer of at most twice the limit, its growth, and the text
    assert text.endswith("a\n") and len(text.split("\n", 1)[1]) <= limit


def test_a_cut_on_a_line_start_keeps_that_line() -> None:
    text = bounded_text([b"a" * 10 + b"\n", b"VERDICT ok\n", b"tail\n"], limit=16)
    assert text.split("\n", 1)[1] == "VERDICT ok\ntail\n"


def test_a_last_line_longer_than_the_limit_keeps_its_end() -> None:
    text = bounded_text([b"x" * 100 + b"\n"], limit=10)
    assert text.split("\n", 1)[1] == "x" * 9 + "\n"


def test_a_cut_through_a_character_is_replaced_not_raised() -> None:
    text = bounded_text(["é".encode() * 10], limit=5)
    assert text.endswith("\ufffdéé")
