"""A streaming writer (and a small reader) for newc cpio archives: Linux initramfs images.

The kernel unpacks an initramfs from the "newc" format (magic ``070701``): a 110-byte ASCII
header per entry, the NUL-terminated name padded to 4 bytes, then the data padded to 4
bytes, ending with a ``TRAILER!!!`` entry. Entries are written as they arrive, so a whole
container root file system streams through without being held in memory.

Kernel unpacker rules this writer follows, because breaking them fails silently at boot:
- it never creates missing parent directories, so the writer emits them first;
- a hard link is an entry with the same inode number and ``nlink >= 2`` as an earlier
  one, written with no data; the earlier entry must also carry ``nlink >= 2``;
- names carry no leading ``/`` or ``./``.

Why hand-written rather than a maintained writer. GNU ``cpio`` archives files that exist
on disk: the image's device nodes and root-owned files would first have to be created on
the host (as root, with ``mknod``), which is what this design avoids. libarchive
(``bsdtar --format newc @rootfs.tar``, or the libarchive-c binding) can re-encode a tar
stream, but it is a host library the tool needs nowhere else, and the harness's own
entries (the init, modules decompressed in memory, device nodes with chosen owners) would
go through bsdtar's mtree input or the binding's entry API: more glue than the format
itself, which is a 110-byte header and 4-byte padding per entry, written here as the
Docker export streams by (plus a reader for the tests).
"""

from __future__ import annotations

import gzip
import io
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_HEADER_FIELDS = 13
_HEADER_SIZE = 6 + 8 * _HEADER_FIELDS  # 110
_CHUNK = 1 << 20


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class CpioError(ValueError):
    """A malformed archive or an entry the format cannot hold."""


def normalize(name: str) -> str:
    """``/a/./b/`` -> ``a/b``; rejects ``..`` so nothing lands outside the root."""
    parts = [p for p in PurePosixPath("/", name).parts[1:] if p not in ("", ".")]
    if ".." in parts:
        raise CpioError(f"cpio entry name {name!r} climbs out of the root")
    return "/".join(parts)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Write newc entries to a binary stream. Call :meth:`close` (or use ``with``) to end it.

    ``close`` writes the trailer but leaves the underlying stream open; it belongs to the
    caller (see :func:`open_initramfs` for a file that is closed too).
    """

    def __init__(self, stream: Sink, *, mtime: int = 0) -> None:
        self._out = stream
        self._mtime = mtime
        self._next_ino = 0
        self._names: set[str] = set()
        self._closed = False
        self.bytes_written = 0

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()

    # -- entries ----------------------------------------------------------------------
    def directory(self, name: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0, mtime: int | None = None) -> None:
        path = normalize(name)
        if not path or path in self._names:
            return  # the root, or a directory already present (tar streams repeat them)
        self._parents(path)
        self._entry(path, stat.S_IFDIR | (mode & 0o7777), b"", nlink=2, uid=uid, gid=gid, mtime=mtime)

    def file(
        self,
        name: str,
        data: bytes | Source,
        *,
        size: int | None = None,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
        ino: int | None = None,
        nlink: int = 1,
    ) -> None:
        """A regular file from bytes, or from a stream of ``size`` bytes (copied in chunks).

        Give ``ino`` and ``nlink >= 2`` to start a hard-link group (see :meth:`hardlink`).
        """
        path = self._new(name)
        self._parents(path)
        self._entry(
            path, stat.S_IFREG | (mode & 0o7777), data, size=size, uid=uid, gid=gid, mtime=mtime, ino=ino, nlink=nlink
        )

    def hardlink(self, name: str, *, ino: int, nlink: int, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Another name for the file written earlier with the same ``ino`` (no data)."""
        if nlink < 2:
            raise CpioError(f"hard link {name}: nlink must be at least 2")
        path = self._new(name)
        self._parents(path)
        self._entry(path, stat.S_IFREG | (mode & 0o7777), b"", uid=uid, gid=gid, ino=ino, nlink=nlink)

    def symlink(self, name: str, target: str, *, uid: int = 0, gid: int = 0, mtime: int | None = None) -> None:
        path = self._new(name)
        self._parents(path)
        self._entry(
            path, stat.S_IFLNK | 0o777, target.encode("utf-8", "surrogateescape"), uid=uid, gid=gid, mtime=mtime
        )

    def device(self, name: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        """A character (``kind="c"``) or block (``"b"``) device node."""
        kinds = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}
        if kind not in kinds:
            raise CpioError(f"device {name}: kind must be 'c' or 'b', not {kind!r}")
        path = self._new(name)
        self._parents(path)
        self._entry(path, kinds[kind] | (mode & 0o7777), b"", rdev=(major, minor))

    def fifo(self, name: str, mode: int = 0o644) -> None:
        path = self._new(name)
        self._parents(path)
        self._entry(path, stat.S_IFIFO | (mode & 0o7777), b"")

    def allocate_ino(self) -> int:
        """A fresh inode number, for a hard-link group's entries to share."""
        self._next_ino += 1
        return self._next_ino

    def has(self, name: str) -> bool:
        return normalize(name) in self._names

    def close(self) -> None:
        if self._closed:
            return
        self._header(TRAILER, 0, 0, 0, 0, 1, 0, 0, (0, 0))
        self._closed = True
        self._out.flush()

    # -- internals --------------------------------------------------------------------
    def _new(self, name: str) -> str:
        path = normalize(name)
        if not path:
            raise CpioError("an entry needs a name below the root")
        if path in self._names:
            raise CpioError(f"cpio entry {path} written twice")
        return path

    def _parents(self, path: str) -> None:
        parent = PurePosixPath(path).parent
        missing = []
        while str(parent) not in (".", "") and str(parent) not in self._names:
            missing.append(str(parent))
            parent = parent.parent
        for directory in reversed(missing):
            self._entry(directory, stat.S_IFDIR | 0o755, b"", nlink=2)

    def _entry(
        self,
        path: str,
        mode: int,
        data: bytes | Source,
        *,
        size: int | None = None,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
        ino: int | None = None,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        if self._closed:
            raise CpioError("the archive is already closed")
        if isinstance(data, bytes):
            size = len(data)
        elif size is None:
            raise CpioError(f"{path}: a streamed file needs its size")
        if ino is None:
            ino = self.allocate_ino()
        self._names.add(path)
        when = self._mtime if mtime is None else mtime
        self._header(path, ino, mode, uid, gid, nlink, max(0, int(when)), size, rdev)
        if isinstance(data, bytes):
            self._write(data)
        else:
            remaining = size
            while remaining:
                chunk = data.read(min(_CHUNK, remaining))
                if not chunk:
                    raise CpioError(f"{path}: the stream ended {remaining} bytes early")
                self._write(chunk)
                remaining -= len(chunk)
        self._write(_pad(size))

    def _header(
        self,
        name: str,
        ino: int,
        mode: int,
        uid: int,
        gid: int,
        nlink: int,
        mtime: int,
        size: int,
        rdev: tuple[int, int],
    ) -> None:
        encoded = name.encode("utf-8", "surrogateescape") + b"\0"
        if size > 0xFFFFFFFF:
            raise CpioError(f"{name}: newc cannot hold files of 4 GiB or more")
        fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = MAGIC + b"".join(b"%08X" % (value & 0xFFFFFFFF) for value in fields)
        self._write(header + encoded + _pad(_HEADER_SIZE + len(encoded)))

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.bytes_written += len(data)


@contextmanager
def open_initramfs(path: Path, *, compress: bool = False, level: int = 1) -> Iterator[CpioWriter]:
    """``with open_initramfs(path) as cpio:`` a writer on a new file, closed at the end.

    Compression is optional because the kernel takes plain cpio too: for a large root
    file system under an emulated CPU, unpacking uncompressed is faster than gunzip.
    """
    with path.open("wb") as raw:
        if compress:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as packed:
                writer = CpioWriter(packed)
                yield writer
                writer.close()
        else:
            writer = CpioWriter(raw)
            yield writer
            writer.close()


# -- reading (tests and debugging) -------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    ino: int
    rdev: tuple[int, int]
    data: bytes

    @property
    def kind(self) -> str:
        for test, label in (
            (stat.S_ISDIR, "dir"),
            (stat.S_ISREG, "file"),
            (stat.S_ISLNK, "symlink"),
            (stat.S_ISCHR, "char"),
            (stat.S_ISBLK, "block"),
            (stat.S_ISFIFO, "fifo"),
        ):
            if test(self.mode):
                return label
        return "other"


def read_entries(stream: Source) -> Iterator[Entry]:
    """The entries of one newc archive (gzip'd or not), up to its trailer."""
    head = stream.read(2)
    rest: Source = stream
    if head == b"\x1f\x8b":
        rest = gzip.GzipFile(fileobj=io.BytesIO(head + stream.read()))
        head = b""
    offset = 0

    def read(count: int) -> bytes:
        nonlocal head, offset
        data = head[:count]
        head = head[count:]
        if len(data) < count:
            data += rest.read(count - len(data))
        if len(data) != count:
            raise CpioError(f"truncated archive at byte {offset}")
        offset += count
        return data

    while True:
        header = read(_HEADER_SIZE)
        if header[:6] != MAGIC:
            raise CpioError(f"bad magic {header[:6]!r} at byte {offset - _HEADER_SIZE}")
        values = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(_HEADER_FIELDS)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmajor, rminor, namesize, _ = values
        name = read(namesize)[:-1].decode()
        read(-(_HEADER_SIZE + namesize) % 4)
        data = read(size)
        read(-size % 4)
        if name == TRAILER:
            return
        yield Entry(name, mode, uid, gid, nlink, mtime, ino, (rmajor, rminor), data)
