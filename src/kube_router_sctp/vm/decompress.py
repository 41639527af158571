"""Bounded decompression of kernel files: xz, gzip and zstd, never more than a limit.

Modules (``.ko.xz``, ``.ko.gz``, ``.ko.zst``) and a bzImage's compressed kernel come from
packages the tool treats as hostile: a few kilobytes that expand to gigabytes must end in
one line, not in the host's memory. xz and gzip are the standard library's, asked for at
most ``limit + 1`` bytes. zstd is the standard library's from Python 3.14, else the
``zstd`` tool, read up to the same bound and then stopped.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import threading
import zlib
from typing import IO

from ..errors import VMError

_DAMAGED_HINT = "the kernel package is damaged: download it again"


def decompress(data: bytes, kind: str, limit: int, what: str) -> bytes:
    """``data`` (``xz``, ``gz`` or ``zst``) decompressed; VMError if damaged, cut short or
    larger than ``limit`` bytes."""
    try:
        if kind == "xz":
            xz = lzma.LZMADecompressor()
            out = xz.decompress(data, max_length=limit + 1)
            complete = xz.eof
        elif kind == "gz":
            gz = zlib.decompressobj(wbits=31)
            out = gz.decompress(data, limit + 1)
            complete = gz.eof
        elif kind == "zst":
            out, complete = _unzstd(data, limit, what)
        else:
            raise ValueError(kind)
    except (lzma.LZMAError, zlib.error, EOFError) as exc:
        raise VMError(f"{what} is damaged ({exc})", _DAMAGED_HINT) from exc
    if len(out) > limit:
        raise VMError(f"{what} decompresses to more than {limit >> 20} MiB", _DAMAGED_HINT)
    if not complete:
        raise VMError(f"{what} is damaged (its compressed data ends early)", _DAMAGED_HINT)
    return out


def _unzstd(data: bytes, limit: int, what: str) -> tuple[bytes, bool]:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        return _unzstd_tool(data, limit, what)
    try:
        unpacker = zstd.ZstdDecompressor()
        out = bytes(unpacker.decompress(data, max_length=limit + 1))
    except zstd.ZstdError as exc:
        raise VMError(f"{what} is damaged ({exc})", _DAMAGED_HINT) from exc
    return out, bool(unpacker.eof)


def _unzstd_tool(data: bytes, limit: int, what: str) -> tuple[bytes, bool]:
    tool = shutil.which("zstd")
    if tool is None:
        raise VMError(f"{what} is zstd-compressed and this Python has no zstd support", "apt-get install zstd")
    with subprocess.Popen(
        [tool, "-dc", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        feeder = threading.Thread(target=_feed, args=(process.stdin, data), daemon=True)
        feeder.start()
        out = process.stdout.read(limit + 1)
        if len(out) > limit:
            process.kill()
            process.wait()
            return out, True
        errors = process.stderr.read(4096)
        code = process.wait(120)
        feeder.join(5)
    if code != 0:
        message = errors.decode(errors="replace").strip().splitlines()
        raise VMError(f"{what} is damaged (zstd: {message[-1] if message else f'exit {code}'})", _DAMAGED_HINT)
    return out, True


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Write ``data`` to the tool and close its input; a tool that stopped early (over the
    limit, damaged input) closes the pipe, which is not an error here."""
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError, ValueError):
        pass
