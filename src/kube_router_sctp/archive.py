"""Safe extraction of tar archives: source tarballs, kernel packages, files out of images.

Why not tarfile's own extraction: its ``data`` filter checks each member with
``os.path.realpath`` against the tree as it stands at that moment, and the Python this
project supports (3.11.7 on its build machines) predates the 2025 fixes to that filter
(CVE-2025-4138, -4330, -4517): a chain of symlinks an archive creates itself can still
lead a later member out of the destination. tarfile also cannot strip a release
archive's single top-level directory, bound the member count and unpacked size (bombs),
refuse a name that is not UTF-8, refuse a second member of the same name instead of
replacing the first, or name the member at fault in a one-line refusal. So tarfile only
*reads* here (headers, pax records, decompression) and its data filter still vets every
member as a second opinion; every byte is *written* by ``safefs``, through directory
descriptors that cannot leave the destination, and the finished tree's symlinks are
resolved once more before it is used.
"""

from __future__ import annotations

import contextlib
import lzma
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import UnsafeSourceError
from .safefs import Beneath, Readable, scratch_tree

MAX_MEMBERS = 200_000
MAX_BYTES = 4 << 30
HINT = "use the archive as published; this one is damaged or hostile"
# What a damaged archive raises while it is read: tarfile's own errors, a compressed
# stream that ends early (EOFError) or is corrupt (zlib, lzma; gzip and bz2 raise OSError).
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)
MAX_EXTENDED_HEADER = 1 << 20  # a pax header or GNU long name; tarfile reads it whole
_EXTENDED = frozenset(
    (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
)


class BoundedTarInfo(tarfile.TarInfo):
    """Members of a tar read from outside. tarfile reads a pax header or a GNU long name
    into memory whole, and a sparse member's map block after block, so a few KiB of
    compressed data could claim gigabytes of either. Extended headers are bounded; sparse
    members are refused (git, dpkg-deb, Docker and this tool never write one). Any reader
    of a tar this tool did not write opens it with ``tarinfo=BoundedTarInfo``; each refusal
    is tarfile's ReadError, a damaged archive in one line wherever the reader catches it."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.ReadError(f"an extended header of {self.size} bytes (at most {MAX_EXTENDED_HEADER})")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse(self.name)
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member

    # pax's sparse formats (GNU 0.0, 0.1, 1.0), applied to the member after the header
    def _proc_gnusparse_00(self, member: tarfile.TarInfo, *_: object) -> None:
        raise _sparse(member.name)

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


def _sparse(name: str) -> tarfile.ReadError:
    return tarfile.ReadError(f"{name!r} is a sparse member, which no archive this tool reads holds")


@dataclass(frozen=True)
class Extracted:
    root: Path
    commit: str | None  # GitHub archives record the commit in their pax header


class _Damaged(Exception):
    """Reading the archive failed (truncated or corrupt), not writing the tree."""


def _refuse(label: str, member: str, why: str) -> UnsafeSourceError:
    return UnsafeSourceError(f"refusing {label}: member {member!r} {why}", HINT)


def _damaged(label: str, exc: BaseException) -> UnsafeSourceError:
    cause = exc.__cause__ if isinstance(exc, _Damaged) and exc.__cause__ else exc
    return damaged(label, f"{type(cause).__name__}: {cause}")


def link_stays_inside(link_path: str, target: str) -> bool:
    """Whether a symlink at ``link_path`` (relative to the tree) pointing to ``target``
    stays inside *as text*; ``safefs.Beneath.check_links`` decides on the written tree."""
    if target.startswith("/"):
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    return not (joined == ".." or joined.startswith("../"))


def _strip(name: str, prefix: str | None) -> str:
    if prefix is None:
        return name
    return name[len(prefix) + 1 :] if name != prefix else ""


class _Reader:
    """A member's data as read from the archive; a read failure becomes ``_Damaged`` so
    that it is never mistaken for a failure to write (a full disk)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def read(self, size: int = -1) -> bytes:
        try:
            return self.handle.read(size)
        except READ_ERRORS as exc:
            raise _Damaged(str(exc)) from exc


def _check(label: str, member: tarfile.TarInfo, rel: str, total: int) -> int:
    """Refuse a member that could not be written safely; return the running byte total."""
    name = member.name
    for text in (name, member.linkname):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _refuse(label, name, "has a name or link target that is not valid UTF-8") from None
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute():
        raise _refuse(label, name, "has an absolute path")
    if ".." in path.parts:
        raise _refuse(label, name, "contains '..'")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise _refuse(label, name, "is a device or FIFO")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise _refuse(label, name, "is of an unsupported type")
    if member.issym() and not link_stays_inside(rel, member.linkname):
        raise _refuse(label, name, f"is a symlink leaving the tree (-> {member.linkname})")
    total += member.size
    if total > MAX_BYTES:
        raise _refuse(label, name, "makes the archive larger than 4 GiB unpacked")
    return total


def _hardlink_target(label: str, member: tarfile.TarInfo, prefix: str | None, names: set[str]) -> str:
    raw = PurePosixPath(member.linkname)
    target = _strip(posixpath.normpath(member.linkname), prefix)
    if raw.is_absolute() or ".." in raw.parts or not target or target not in names:
        raise _refuse(label, member.name, f"is a hard link leaving the tree (-> {member.linkname})")
    return target


def _write(tree: Beneath, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, link: str) -> None:
    if member.issym() or member.islnk():
        # A second opinion on where a link leads; safefs decides. A file or directory gets
        # none: its name was checked above, safefs refuses any parent that is a symlink,
        # and the filter's realpath of every name was a third of a kernel package's unpack.
        vetted = member.replace(name=rel, linkname=link or member.linkname, deep=False)
        try:
            tarfile.data_filter(vetted, str(tree.root))
        except tarfile.FilterError as exc:
            raise tree.refuse(member.name, f"was rejected by tarfile's data filter ({exc})") from exc
    if member.isdir():
        tree.mkdir(rel)
    elif member.issym():
        tree.symlink(rel, member.linkname)
    elif member.islnk():
        tree.hardlink(rel, link)
    else:
        try:
            handle = tar.extractfile(member)
        except READ_ERRORS as exc:
            raise _Damaged(str(exc)) from exc
        if handle is None:
            raise tree.refuse(member.name, "has no data")
        mode = (member.mode or 0o644) & 0o755 | 0o644
        tree.write(rel, _Reader(handle), mode, size=member.size)


def extract(archive: Path, dest: Path) -> Extracted:
    """A kube-router source tarball into ``dest``: every member checked before anything
    is written, the single top-level directory stripped, the commit of a GitHub archive
    read from its pax header."""
    label = archive.name
    try:
        tar = tarfile.open(archive, "r:*", tarinfo=BoundedTarInfo)  # noqa: SIM115 - closed by the with-block below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeSourceError(f"{archive.name} is not a readable tar archive ({exc})", "check the file") from exc
    try:
        with tar, scratch_tree(dest, label, HINT) as tree:
            try:
                members = tar.getmembers()
            except READ_ERRORS as exc:
                raise _Damaged(str(exc)) from exc
            if len(members) > MAX_MEMBERS:
                raise _refuse(label, members[MAX_MEMBERS].name, "exceeds the member limit")
            commit = tar.pax_headers.get("comment")
            tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
            prefix = tops.pop() if len(tops) == 1 and any(m.isdir() for m in members) else None
            total = 0
            names: set[str] = set()
            links: dict[int, str] = {}
            for index, member in enumerate(members):
                rel = _strip(posixpath.normpath(member.name), prefix)
                total = _check(label, member, rel, total)
                if member.islnk():
                    links[index] = _hardlink_target(label, member, prefix, names)
                names.add(rel)
            for index, member in enumerate(members):
                rel = _strip(posixpath.normpath(member.name), prefix)
                if rel and rel != ".":
                    _write(tree, tar, member, rel, links.get(index, ""))
    except _Damaged as exc:
        raise _damaged(label, exc) from exc
    return Extracted(dest, commit if commit and len(commit) == 40 else None)


def extract_tar(tar: tarfile.TarFile, dest: Path, label: str) -> int:
    """Every member of an open archive (a stream is fine) into ``dest``, each checked as
    it comes; on a refusal the caller removes ``dest``. Returns how many were written."""
    count = 0
    try:
        with scratch_tree(dest, label, HINT) as tree:
            total = 0
            names: set[str] = set()
            for member in _members(tar):
                count += 1
                if count > MAX_MEMBERS:
                    raise _refuse(label, member.name, "exceeds the member limit")
                rel = posixpath.normpath(member.name).removeprefix("./")
                total = _check(label, member, rel, total)
                link = _hardlink_target(label, member, None, names) if member.islnk() else ""
                names.add(rel)
                if rel and rel != ".":
                    _write(tree, tar, member, rel, link)
    except _Damaged as exc:
        raise _damaged(label, exc) from exc
    return count


@contextlib.contextmanager
def open_stream(handle: Readable, label: str, mode: str = "r|*") -> Iterator[tarfile.TarFile]:
    """A tar stream (``r|*``: any compression) read from ``handle``: a stream that is not
    a tar archive in the compression it claims, or that ends early, is a damaged archive
    (one line, UnsafeSourceError), wherever tarfile or the decompressor notices it."""
    try:
        tar = tarfile.open(fileobj=handle, mode=mode, tarinfo=BoundedTarInfo)  # type: ignore[call-overload]  # noqa: SIM115
    except READ_ERRORS as exc:
        raise _damaged(label, exc) from exc
    try:
        with tar:
            yield tar
    except READ_ERRORS as exc:  # closing reads the rest of a compressed stream
        raise _damaged(label, exc) from exc


def damaged(label: str, why: str) -> UnsafeSourceError:
    """A damaged archive noticed outside tarfile (a decompressing tool that failed)."""
    return UnsafeSourceError(
        f"{label} is damaged or truncated ({why})",
        "download it again; if it stays so, the file is not the one published",
    )


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            member = tar.next()
        except READ_ERRORS as exc:
            raise _Damaged(str(exc)) from exc
        if member is None:
            return
        yield member
