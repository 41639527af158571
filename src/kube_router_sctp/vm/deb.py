"""Debian binary packages (``.deb``), read with python-debian: the control fields, and the
data member unpacked into a directory without dpkg.

A kernel package is hostile input like any other: python-debian only reads the ar
container, tarfile only decompresses, and every member is checked and written by the
project's safe extractor (``archive.extract_tar``: no absolute or climbing names, no
device nodes, no link out of the tree, bounded size). The data member streams through
once (a kernel's is ~100 MB of xz, never held in memory); zstd members are decompressed
by the ``unzstd`` tool (tarfile reads no zstd before Python 3.14).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from debian.arfile import ArError, ArMember
from debian.debfile import DebError, DebFile

from ..archive import READ_ERRORS, damaged, extract_tar, open_stream
from ..errors import UnsafeSourceError, VMError


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
        if str(name).endswith(".zst"):
            return _unpack_zstd(deb, member, dest)
        with open_stream(member, deb.name) as archive:
            return extract_tar(archive, dest, deb.name)
    except (ArError, DebError, StopIteration) as exc:
        raise VMError(f"{deb.name} is damaged ({exc})", "download the package again") from exc
    finally:
        package.close()


def _unpack_zstd(deb: Path, member: ArMember, dest: Path) -> int:
    tool = shutil.which("unzstd")
    if tool is None:
        raise VMError(f"{deb.name}'s data is zstd-compressed and unzstd is missing", "apt-get install zstd")
    # The tool's complaints go to a file, not the terminal: they are hostile input's
    # echo, and the refusal below says what failed in one line.
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen([tool, "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors) as proc,
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
        except UnsafeSourceError:
            proc.wait()
            if proc.returncode:  # the tool's verdict is the cause, not the tar it cut short
                raise damaged(deb.name, _last_line(errors, proc.returncode)) from None
            raise
        finally:
            proc.stdout.close()
            feeder.join(timeout=60)
        proc.wait()
        if proc.returncode:
            raise damaged(deb.name, _last_line(errors, proc.returncode))
    return count


def _last_line(errors: IO[bytes], code: int) -> str:
    errors.seek(0)
    lines = errors.read(4096).decode(errors="replace").strip().splitlines()
    return f"unzstd exit {code}: {lines[-1].strip()}" if lines else f"unzstd exit {code}"
