"""The tree digest depends on content, paths, modes and links, not on timestamps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kube_router_sctp.errors import UnsafeSourceError
from kube_router_sctp.treedigest import digest_tree


def sample(root: Path) -> Path:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.go").write_text("package b\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("a/b/f.go")
    return root


def test_digest_is_stable_and_ignores_mtime(tmp_path: Path) -> None:
    one = digest_tree(sample(tmp_path / "one"))
    two_root = sample(tmp_path / "two")
    os.utime(two_root / "a" / "b" / "f.go", (1, 1))
    assert digest_tree(two_root) == one


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "a" / "b" / "f.go").write_text("package c\n"),
        lambda r: (r / "run.sh").chmod(0o644),
        lambda r: ((r / "link").unlink(), (r / "link").symlink_to("run.sh")),
        lambda r: (r / "a" / "b" / "f.go").rename(r / "a" / "g.go"),
        lambda r: (r / "new").write_text(""),
    ],
)
def test_digest_sees_every_change(tmp_path: Path, change: object) -> None:
    before = digest_tree(sample(tmp_path / "t"))
    change(tmp_path / "t")  # type: ignore[operator]
    assert digest_tree(tmp_path / "t") != before


def test_special_files_are_refused(tmp_path: Path) -> None:
    root = sample(tmp_path / "t")
    os.mkfifo(root / "fifo")
    with pytest.raises(UnsafeSourceError, match="neither a file nor a symlink"):
        digest_tree(root)
