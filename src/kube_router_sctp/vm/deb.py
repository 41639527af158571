"""Debian binary packages (``.deb``), read with python-debian: the control fields, and the
data member unpacked into a directory without dpkg.

A kernel package is hostile input like any other: python-debian only reads the ar
container, tarfile only decompresses, and every member is checked and written by the
project's safe extractor (``archive.extract_tar``: no absolute or climbing names, no
device nodes, no link out of the tree, bounded size). The data member streams through
once (a kernel's is ~100 MB of xz, never held in memory). xz and zstd members are
decompressed by their tool (``xz``, ``unzstd``) in a process of its own, so that
decompressing (4.5 s for trixie's 6.12 package) runs on one core while this process checks
and writes what came before on the other; tarfile reads no zstd before Python 3.14, and an
xz member falls back to Python's lzma where ``xz`` is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from debian.arfile import ArError, ArMember
from debian.debfile import DebError, DebFile

from ..archive import READ_ERRORS, damaged, extract_tar, open_stream
from ..errors import UnsafeSourceError, VMError
from ..log import clean
from ..safefs import Readable
from .decompress import ZSTD_MAGIC, XzReader, zstd_frames_only


@dataclass(frozen=True)
class Control:
    package: str
    version: str
    architecture: str
    depends: str


def _open(deb: Path) -> DebFile:
    try:
        return DebFile(str(deb))
    except (ArError, DebError, OSError, ValueError) as exc:
        raise VMError(f"{deb} is not a Debian package ({exc})", "pass a kernel .deb as Debian publishes it") from exc


def control(deb: Path) -> Control:
    """The package's own name, version, architecture and Depends."""
    package = _open(deb)
    try:
        fields = package.debcontrol()
    except (ArError, DebError, KeyError, ValueError, *READ_ERRORS) as exc:
        # READ_ERRORS: a control member that is corrupt or cut short (CRC, xz, EOF)
        raise VMError(f"{deb} has no readable control file ({exc})", "download the package again") from exc
    finally:
        package.close()
    name = str(fields.get("Package", ""))
    if not name:
        raise VMError(f"{deb}'s control file names no package", "pass a kernel .deb as Debian publishes it")
    return Control(
        name, str(fields.get("Version", "")), str(fields.get("Architecture", "")), str(fields.get("Depends", ""))
    )


def unpack(deb: Path, dest: Path) -> int:
    """Write the package's files under ``dest`` (which may already hold other packages of
    the same kernel: directories are shared, a file written twice is refused)."""
    package = _open(deb)
    try:
        name = next(n for n in package.getnames() if str(n).startswith("data.tar"))
        member = package.getmember(name)
        tool = _TOOLS.get(PurePosixPath(str(name)).suffix)
        if tool:
            # The tool reads what it recognises, whatever the name says (unzstd takes xz
            # and gzip too): the member must be what its name says. zstd data is walked
            # frame by frame (pzstd's starts with a skippable frame); xz is its magic.
            if tool.magic == ZSTD_MAGIC:
                foreign = zstd_frames_only(member)
                if foreign:
                    raise damaged(deb.name, f"{name}: {foreign}")
            else:
                start = member.read(len(tool.magic))
                if start != tool.magic:
                    raise damaged(deb.name, f"{name} does not start as {tool.name} reads it ({start[:8].hex()})")
            member.seek(0)
        path = shutil.which(tool.name) if tool else None
        if tool and path:
            return _unpack_with(path, tool.args, deb, member, dest)
        if tool and tool.package:
            raise VMError(
                f"{deb.name}'s data member needs {tool.name}, which is missing", f"apt-get install {tool.package}"
            )
        # Read as the name says, never by what the content looks like: tarfile's "r|*"
        # would take any compression, and its xz reader has no memory limit.
        suffix = PurePosixPath(str(name)).suffix if str(name) != "data.tar" else ""
        stream: Readable
        if suffix == ".xz":
            stream, mode = XzReader(member), "r|"
        elif suffix in _PYTHON_MODES:
            stream, mode = member, _PYTHON_MODES[suffix]
        else:
            raise VMError(
                f"{deb.name}'s data member {name} is compressed in a way this tool does not read",
                "pass a kernel .deb as Debian publishes it (data.tar.xz, .zst, .gz or .bz2)",
            )
        with open_stream(stream, deb.name, mode) as archive:
            count = extract_tar(archive, dest, deb.name)
        if mode == "r|":
            _check_tail(stream, deb.name)
        return count
    except (ArError, DebError, StopIteration) as exc:
        raise VMError(f"{deb.name} is damaged ({exc})", "download the package again") from exc
    finally:
        package.close()


@dataclass(frozen=True)
class _Tool:
    """A decompressing tool: its arguments read standard input and write standard output;
    ``package`` is what provides it where it is required, empty where Python can read
    the member itself when the tool is missing."""

    name: str
    args: tuple[str, ...]
    magic: bytes
    package: str = ""


_TAIL = 1 << 20  # more after the archive's end is not a package Debian builds
_PYTHON_MODES = {"": "r|", ".gz": "r|gz", ".bz2": "r|bz2"}
# xz's memory is bounded as a module's is (decompress.py): Debian's packages use 8 MiB
# dictionaries, and a stream that claims gigabytes is refused. unzstd refuses windows over
# 128 MiB unless told otherwise.
_TOOLS = {
    ".zst": _Tool("unzstd", ("-c",), ZSTD_MAGIC, "zstd"),
    ".xz": _Tool("xz", ("-d", "-c", "-T0", "--format=xz", "--memlimit-decompress=256MiB"), b"\xfd7zXZ\x00"),
}


def _unpack_with(path: str, args: tuple[str, ...], deb: Path, member: ArMember, dest: Path) -> int:
    name = Path(path).name
    # The tool's complaints go to a file, not the terminal: they are hostile input's
    # echo, and the refusal below says what failed in one line.
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen([path, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def feed() -> None:
            try:
                for chunk in iter(lambda: member.read(1 << 20), b""):
                    stdin.write(chunk)
            except BrokenPipeError:
                pass  # the reader stopped (a refused member): its error is the one to report
            finally:
                stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            with open_stream(proc.stdout, deb.name, "r|") as archive:
                count = extract_tar(archive, dest, deb.name)
            _check_tail(proc.stdout, deb.name)  # reading the end's padding lets the tool finish
        except UnsafeSourceError:
            proc.stdout.close()  # a tool still writing ends (SIGPIPE) instead of blocking the wait
            proc.wait()
            if proc.returncode > 0:  # the tool's verdict is the cause, not the tar it cut short
                raise damaged(deb.name, _last_line(name, errors, proc.returncode)) from None
            raise
        finally:
            proc.stdout.close()
            feeder.join(timeout=60)
        proc.wait()
        if proc.returncode:
            raise damaged(deb.name, _last_line(name, errors, proc.returncode))
    return count


def _check_tail(stream: Readable, label: str) -> None:
    """What follows the archive's end, decompressed: padding, or another xz stream, but
    not more than 1 MiB of it, and nothing damaged. Both paths read it (a tool or
    Python's lzma)."""
    tail = 0
    try:
        while chunk := stream.read(1 << 16):
            tail += len(chunk)
            if tail > _TAIL:
                raise damaged(label, "more than 1 MiB follows the archive's end")
    except READ_ERRORS as exc:
        raise damaged(label, f"after the archive's end: {exc}") from exc


def _last_line(tool: str, errors: IO[bytes], code: int) -> str:
    errors.seek(0)
    lines = errors.read(4096).decode(errors="replace").strip().splitlines()
    # The first line is the verdict; xz follows "Memory usage limit reached" with an
    # estimate of its own that misleads when read alone.
    lines = [line for line in lines if line.strip()]
    return f"{tool} exit {code}: {clean(lines[0].strip())}" if lines else f"{tool} exit {code}"
