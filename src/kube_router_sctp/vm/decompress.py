"""Bounded decompression of kernel files: xz, gzip and zstd, never more than a limit.

Modules (``.ko.xz``, ``.ko.gz``, ``.ko.zst``) and a bzImage's compressed kernel come from
packages the tool treats as hostile: a few kilobytes that expand to gigabytes must end in
one line, not in the host's memory. xz and gzip are the standard library's, asked for at
most ``limit + 1`` bytes. zstd is the standard library's from Python 3.14, else the
``zstd`` tool, read up to the same bound and then stopped.
"""

from __future__ import annotations

import io
import lzma
import shutil
import subprocess
import threading
import zlib
from typing import IO, Protocol

from ..errors import VMError

_DAMAGED_HINT = "the kernel package is damaged: download it again"


# liblzma allocates the dictionary an xz header asks for: a hostile header asks for 4 GiB.
_XZ_MEMLIMIT = 256 << 20
# Streams (xz) or members (gzip) one after another, as `xz -d`/`gunzip` read them.
_MAX_PARTS = 64
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A zstd block holds at most 128 KiB: a kernel package's data is some 800 of them. Blocks
# and skippable frames count alike.
_MAX_ZSTD_BLOCKS = 100_000


class XzReader(io.RawIOBase):
    """An xz file read through liblzma with the memory limit above, for tarfile's stream
    mode (``r|``): tarfile's own xz reader allocates whatever dictionary a header asks
    for. Like ``xz -d``, it reads streams one after another with zero padding between
    them, and refuses anything else after a stream."""

    def __init__(self, source: Seekable) -> None:
        super().__init__()
        self._source = source
        self._decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
        self._streams = 1

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        want = size if size and size > 0 else 1 << 20
        while True:
            if self._decoder.eof:
                data = self._decoder.unused_data.lstrip(b"\0")
                while not data:  # stream padding, or the end
                    more = self._source.read(1 << 20)
                    if not more:
                        return b""
                    data = more.lstrip(b"\0")
                self._streams += 1
                if self._streams > _MAX_PARTS:
                    raise lzma.LZMAError(f"more than {_MAX_PARTS} xz streams")
                self._decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
            elif self._decoder.needs_input:
                data = self._source.read(1 << 20)
                if not data:
                    raise EOFError("the xz stream ends early")
            else:
                data = b""
            out = self._decoder.decompress(data, max_length=want)
            if out:
                return out


class Seekable(Protocol):
    def read(self, size: int) -> bytes: ...
    def seek(self, offset: int, whence: int = 0) -> object: ...


def zstd_frames_only(stream: Seekable) -> str:
    """Why ``stream`` is not zstd frames alone, or "" when it is. The ``zstd`` tool reads
    xz, lzma and gzip frames as well, whatever the file is called, and its xz decoder
    has no memory limit: data that claims to be zstd is walked frame by frame and block
    by block first (headers only; the content is skipped)."""
    offset = 0
    blocks = 0  # blocks and skippable frames alike: a walk through millions is refused

    def too_many() -> bool:
        nonlocal blocks
        blocks += 1
        return blocks > _MAX_ZSTD_BLOCKS

    def take(size: int) -> bytes:
        nonlocal offset
        data = stream.read(size)
        offset += len(data)
        return data

    def skip(size: int) -> None:
        nonlocal offset
        stream.seek(size, 1)
        offset += size

    while magic := take(4):
        start = offset - len(magic)
        if magic == ZSTD_MAGIC:
            descriptor = take(1)
            if not descriptor:
                return ""  # cut short: the tool says so
            fhd = descriptor[0]
            if fhd & 0x08:
                return f"a zstd frame at byte {start} sets a reserved bit"
            single = fhd >> 5 & 1
            skip((0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6])
            while True:
                header = take(3)
                if len(header) < 3:
                    return ""
                if too_many():
                    return f"more than {_MAX_ZSTD_BLOCKS} zstd blocks"
                value = int.from_bytes(header, "little")
                kind = value >> 1 & 3
                if kind == 3:
                    return f"a zstd block at byte {offset - 3} has the reserved type"
                skip(1 if kind == 1 else value >> 3)
                if value & 1:
                    break
            if fhd & 0x04:
                skip(4)  # the content checksum
        elif len(magic) == 4 and magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:
            if too_many():
                return f"more than {_MAX_ZSTD_BLOCKS} zstd blocks"
            size = take(4)
            if len(size) < 4:
                return ""
            skip(int.from_bytes(size, "little"))  # a skippable frame
        else:
            return f"it holds data that is not zstd at byte {start} ({magic.hex()})"
    return ""


def decompress(data: bytes, kind: str, limit: int, what: str) -> bytes:
    """``data`` (``xz``, ``gz`` or ``zst``) decompressed; VMError if damaged, cut short or
    larger than ``limit`` bytes."""
    try:
        if kind == "zst":
            out, complete = _unzstd(data, limit, what)
        elif kind in ("xz", "gz"):
            out, complete = _concatenated(data, kind, limit)
        else:
            raise ValueError(kind)
    except (lzma.LZMAError, zlib.error, EOFError) as exc:
        raise VMError(f"{what} is damaged ({exc})", _DAMAGED_HINT) from exc
    except MemoryError as exc:
        raise VMError(f"{what} asks for more memory than this host gives it", _DAMAGED_HINT) from exc
    if len(out) > limit:
        raise VMError(f"{what} decompresses to more than {limit >> 20} MiB", _DAMAGED_HINT)
    if not complete:
        raise VMError(f"{what} is damaged (its compressed data ends early)", _DAMAGED_HINT)
    return out


def _concatenated(data: bytes, kind: str, limit: int) -> tuple[bytes, bool]:
    """Every xz stream or gzip member of ``data`` in turn (trailing zero padding allowed
    after xz), at most ``limit + 1`` bytes in all."""
    out = bytearray()
    rest = data
    for _ in range(_MAX_PARTS):
        unpacker: lzma.LZMADecompressor | zlib._Decompress
        if kind == "xz":
            unpacker = lzma.LZMADecompressor(memlimit=_XZ_MEMLIMIT)
            out += unpacker.decompress(rest, max_length=limit + 1 - len(out))
        else:
            unpacker = zlib.decompressobj(wbits=31)
            out += unpacker.decompress(rest, limit + 1 - len(out))
        if len(out) > limit or not unpacker.eof:
            return bytes(out), len(out) > limit
        rest = unpacker.unused_data
        if kind == "xz":
            rest = rest.lstrip(b"\0")  # stream padding
        if not rest:
            return bytes(out), True
    raise lzma.LZMAError(f"more than {_MAX_PARTS} concatenated parts")


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
    foreign = zstd_frames_only(io.BytesIO(data))
    if foreign:
        raise VMError(f"{what} is damaged ({foreign})", _DAMAGED_HINT)
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
        try:
            code = process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = -9
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
