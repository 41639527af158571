"""Safe extraction of source tarballs.

Every member is checked before anything is written: absolute paths, ``..``, symlinks or
hard links leaving the tree, device files and FIFOs are refused with the member named.
Python's ``data`` extraction filter then runs as a second line of defence. A single
top-level directory (``kube-router-0.3.2/``) is stripped, as release archives have one.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import UnsafeSourceError

MAX_MEMBERS = 200_000
MAX_BYTES = 4 << 30


@dataclass(frozen=True)
class Extracted:
    root: Path
    commit: str | None  # GitHub archives record the commit in their pax header


def _refuse(archive: Path, member: str, why: str) -> UnsafeSourceError:
    return UnsafeSourceError(
        f"refusing {archive.name}: member {member!r} {why}",
        "use the release archive as published; this one is damaged or hostile",
    )


def link_stays_inside(link_path: str, target: str) -> bool:
    """Whether a symlink at ``link_path`` (relative to the tree) pointing to ``target`` stays inside."""
    if target.startswith("/"):
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    return not (joined == ".." or joined.startswith("../"))


def _strip(name: str, prefix: str | None) -> str:
    if prefix is None:
        return name
    return name[len(prefix) + 1 :] if name != prefix else ""


def extract(archive: Path, dest: Path) -> Extracted:
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with-block below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeSourceError(f"{archive.name} is not a readable tar archive ({exc})", "check the file") from exc
    with tar:
        members = tar.getmembers()
        if len(members) > MAX_MEMBERS:
            raise _refuse(archive, members[MAX_MEMBERS].name, "exceeds the member limit")
        commit = tar.pax_headers.get("comment")
        tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
        prefix = tops.pop() if len(tops) == 1 and any(m.isdir() for m in members) else None
        total = 0
        names = set()
        for member in members:
            name = member.name
            path = PurePosixPath(name)
            if name.startswith("/") or path.is_absolute():
                raise _refuse(archive, name, "has an absolute path")
            if ".." in path.parts:
                raise _refuse(archive, name, "contains '..'")
            if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                raise _refuse(archive, name, "is a device or FIFO")
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise _refuse(archive, name, "is of an unsupported type")
            rel = _strip(posixpath.normpath(name), prefix)
            if member.issym() and not link_stays_inside(rel, member.linkname):
                raise _refuse(archive, name, f"is a symlink leaving the tree (-> {member.linkname})")
            if member.islnk():
                raw = PurePosixPath(member.linkname)
                target = _strip(posixpath.normpath(member.linkname), prefix)
                if raw.is_absolute() or ".." in raw.parts or not target or target not in names:
                    raise _refuse(archive, name, f"is a hard link leaving the tree (-> {member.linkname})")
            total += member.size
            if total > MAX_BYTES:
                raise _refuse(archive, name, "makes the archive larger than 4 GiB unpacked")
            names.add(rel)
        for member in members:
            rel = _strip(posixpath.normpath(member.name), prefix)
            if not rel or rel == ".":
                continue
            member.name = rel
            if member.islnk():
                member.linkname = _strip(posixpath.normpath(member.linkname), prefix)
            member.mode = (member.mode or 0o644) & 0o755 | (0o644 if not member.isdir() else 0o755)
            try:
                tar.extract(member, dest, filter="data")
            except tarfile.FilterError as exc:
                raise _refuse(archive, member.name, f"was rejected ({exc})") from exc
    return Extracted(dest, commit if commit and len(commit) == 40 else None)
