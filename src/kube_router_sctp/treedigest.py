"""A sha256 digest of a source tree that does not depend on how the tree was shipped.

kube-router arrives as a git export, a GitHub archive or a release tarball; their bytes
differ (compression, member order, timestamps) but their trees are the same. The
digest covers exactly what a build sees, the way git does:

    sha256 of the manifest, one line per file, sorted by path (bytes):
        "<mode> <sha256 of content> <path>\\n"
    mode 100755 for executables, 100644 for other files, 120000 for symlinks (whose
    "content" is the link target). Directories are implied; empty ones do not count.

One pin per release therefore verifies every kind of source, and the digest of a cached
tree can be checked again before each use.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .errors import UnsafeSourceError


def manifest(root: Path) -> list[tuple[str, str, str]]:
    """(path, mode, sha256) for every file below ``root``, sorted by path bytes.

    Walked through directory descriptors (``os.fwalk``) and read with ``O_NOFOLLOW``: a
    symlink counts as its target text and is never followed, whatever it points at.
    """
    rows: list[tuple[str, str, str]] = []
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root):
        base = Path(dirpath)
        names = list(filenames)
        # fwalk lists symlinks to directories among dirnames (and does not enter them).
        for name in list(dirnames):
            if stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                dirnames.remove(name)
                names.append(name)
        for name in names:
            rel = (base / name).relative_to(root).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsafeSourceError(
                    f"source tree member {rel.encode('utf-8', 'surrogateescape')!r} has a name that is not valid UTF-8",
                    "source trees may only hold UTF-8 names",
                ) from None
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(name, dir_fd=dirfd)
                rows.append((rel, "120000", hashlib.sha256(target.encode()).hexdigest()))
            elif stat.S_ISREG(info.st_mode):
                mode = "100755" if info.st_mode & stat.S_IXUSR else "100644"
                rows.append((rel, mode, _sha256_at(dirfd, name)))
            else:
                raise UnsafeSourceError(
                    f"source tree member {rel} is neither a file nor a symlink",
                    "source trees may only hold regular files, directories and symlinks",
                )
    rows.sort(key=lambda row: row[0].encode())
    return rows


def _sha256_at(dirfd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tree(root: Path) -> str:
    text = "".join(f"{mode} {sha} {path}\n" for path, mode, sha in manifest(root))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
