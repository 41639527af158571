"""How much of a container's output the engine keeps (engine.bounded_text): the last
``limit`` bytes, whatever the chunks, the cut said on the first line. The real daemon's
streams: tests/integration/test_engine_boundary.py."""

from __future__ import annotations

import pytest

from kube_router_sctp.engine import bounded_text


def test_output_under_the_limit_is_kept_whole() -> None:
    assert bounded_text([b"one\n", b"two\n"], limit=8) == "one\ntwo\n"


@pytest.mark.parametrize("sizes", [[1] * 40, [40], [7, 33], [13, 1, 26]])
def test_only_the_last_bytes_are_kept_however_they_come(sizes: list[int]) -> None:
    data = bytes(range(65, 65 + 26)) + b"0123456789abcd"  # 40 bytes
    chunks, at = [], 0
    for size in sizes:
        chunks.append(data[at : at + size])
        at += size
    first, rest = bounded_text(chunks, limit=16).split("\n", 1)
    assert first == "[kube-router-sctp: 24 bytes of output dropped, more than 16 bytes came]"
    assert rest == data[-16:].decode()


def test_a_cut_through_a_character_is_replaced_not_raised() -> None:
    text = bounded_text(["é".encode() * 10], limit=5)
    assert text.endswith("\ufffdéé")
