"""The content-addressed cache: verified downloads and verified source trees.

Layout under the cache root::

    blobs/sha256/<hex>     a downloaded file, stored under the sha256 of its bytes
    trees/<digest>/        an exported source tree, stored under its tree digest
    index/<kind>/<key>     what a name stands for, as a small JSON file: for Go modules
                           (``gomod``), module@version's .mod or .zip -> its blob and h1
    tmp/                   work in progress; never read as a result
    locks/                 one lock file per entry, so concurrent pipelines cooperate

Entries appear only by atomic rename after verification, so a reader never sees a
partial file. Entries are verified again on every use: a tampered or damaged entry is
deleted and reported as missing, and the caller fetches it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import log
from .treedigest import digest_tree, sha256_file


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kube-router-sctp"


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- layout ---------------------------------------------------------------
    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def blob_path(self, sha256: str) -> Path:
        return self._dir("blobs", "sha256") / sha256

    def tree_path(self, digest: str) -> Path:
        return self._dir("trees") / digest

    def index_path(self, kind: str, key: str) -> Path:
        return self._dir("index", kind) / key

    def tmp_dir(self) -> Path:
        return self._dir("tmp")

    def scratch(self, prefix: str) -> Path:
        """A fresh private directory on the cache's file system (for atomic renames)."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self._dir("tmp")))

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold an exclusive lock on one cache entry (blocks while another run holds it)."""
        path = self._dir("locks") / f"{name}.lock"
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- blobs ----------------------------------------------------------------
    def has_blob(self, sha256: str) -> bool:
        """True when a verified copy is present; a damaged copy is removed."""
        path = self.blob_path(sha256)
        if not path.is_file():
            return False
        actual = sha256_file(path)
        if actual == sha256:
            return True
        log.warn(f"cache entry {path} is damaged (sha256 {actual}); removing it and fetching again")
        path.unlink(missing_ok=True)
        return False

    def put_blob(self, source: Path, sha256: str) -> Path:
        """Move a verified file into the cache. The caller has checked ``sha256``."""
        target = self.blob_path(sha256)
        source.chmod(0o444)
        source.replace(target)
        return target

    # -- trees ----------------------------------------------------------------
    def has_tree(self, digest: str) -> bool:
        path = self.tree_path(digest)
        if not path.is_dir():
            return False
        actual = digest_tree(path)
        if actual == digest:
            return True
        log.warn(f"cached source tree {path} does not match its digest; removing it and exporting again")
        remove_tree(path)
        return False

    def put_tree(self, source: Path, digest: str) -> Path:
        target = self.tree_path(digest)
        if target.exists():
            remove_tree(target)
        source.replace(target)
        return target

    # -- housekeeping -----------------------------------------------------------
    def entries(self) -> dict[str, list[str]]:
        """What the cache holds (for reports, tests and `doctor`)."""
        blobs = sorted(p.name for p in self._dir("blobs", "sha256").iterdir())
        trees = sorted(p.name for p in self._dir("trees").iterdir())
        return {"blobs": blobs, "trees": trees}

    def verify_all(self) -> list[str]:
        """Check every entry; return the ones that were damaged (and are now removed)."""
        damaged = [sha for sha in self.entries()["blobs"] if not self.has_blob(sha)]
        damaged += [d for d in self.entries()["trees"] if not self.has_tree(d)]
        return damaged


def prune_recent(directory: Path, pattern: str, keep: int) -> None:
    """Keep the ``keep`` most recently used files of ``directory`` matching ``pattern``
    (users ``touch`` what they reuse). Another run may be reading an older one: on Linux
    its open file stays readable after the unlink."""
    used: list[tuple[float, Path]] = []
    for path in directory.glob(pattern):
        with contextlib.suppress(FileNotFoundError):  # pruned by another run meanwhile
            used.append((path.stat().st_mtime, path))
    for _mtime, old in sorted(used, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path)
