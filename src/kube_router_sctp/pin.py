"""Pin a kube-router release: the commit its tag names and the digest of its tree.

A maintainer runs this once per new release, reviews the tag, and commits the printed
lines to the defaults (or a user adds them to their config). Builds then refuse any
source whose tree differs, and any git tag that moved.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import gitsource, goproxy
from .cache import Cache, remove_tree
from .download import Downloader
from .goproxy import Restoration
from .treedigest import digest_tree


@dataclass(frozen=True)
class Pinned:
    version: str
    commit: str
    date: int
    tree_sha256: str
    restored: tuple[Restoration, ...]

    def toml(self) -> str:
        return (
            f'"{self.version}" = {{ commit = "{self.commit}", date = {self.date}, tree-sha256 = "{self.tree_sha256}" }}'
        )


def pin(
    location: str,
    version: str,
    cache: Cache,
    downloader: Downloader,
    restorations: list[Restoration],
    go_proxy: str | None,
    offline: bool = False,
) -> Pinned:
    gitdir = gitsource.git_dir(location, cache.root / "git", offline)
    commit = gitsource.resolve(gitdir, version)
    scratch = cache.scratch("pin-")
    try:
        missing = gitsource.export(gitdir, commit, scratch)
        restored = goproxy.restore(scratch, missing, restorations, downloader, go_proxy) if missing else []
        return Pinned(version, commit, gitsource.commit_time(gitdir, commit), digest_tree(scratch), tuple(restored))
    finally:
        remove_tree(scratch)
