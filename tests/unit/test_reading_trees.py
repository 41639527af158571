"""Reading a (hostile) source tree never follows a link out of it: patching, digesting,
writing the build context and ``patch --output`` all refuse a file behind a symlink."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from kube_router_sctp import context, unidiff
from kube_router_sctp.errors import UnsafeSourceError
from kube_router_sctp.patch import PatchedTree, Series
from kube_router_sctp.treedigest import digest_tree

PATCH = """Description: x
---
--- a/pkg/file.go
+++ b/pkg/file.go
@@ -1,1 +1,1 @@
-secret
+patched
"""
NEW_FILE = """Description: x
---
--- /dev/null
+++ b/pkg/new_sctp_test.go
@@ -0,0 +1,1 @@
+package pkg
"""


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "file.go").write_text("secret\n")
    return directory


def tree_with_link(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "pkg").symlink_to(outside)  # the directory the patch names is a link out
    return root


@pytest.mark.parametrize("text", [PATCH, NEW_FILE], ids=["read a file", "create a file"])
def test_patch_does_not_go_through_a_symlinked_directory(tmp_path: Path, outside: Path, text: str) -> None:
    root = tree_with_link(tmp_path, outside)
    patch = tmp_path / "0001-x.patch"
    patch.write_text(text)
    with pytest.raises(UnsafeSourceError, match="member 'pkg/.*' passes through the symlink 'pkg'"):
        unidiff.apply(patch, None, root)
    assert sorted(p.name for p in outside.iterdir()) == ["file.go"]


def test_patch_does_not_read_a_symlinked_file(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "file.go").symlink_to(outside / "file.go")
    patch = tmp_path / "0001-x.patch"
    patch.write_text(PATCH)
    with pytest.raises(UnsafeSourceError, match="is a symlink, not a regular file"):
        unidiff.apply(patch, None, root)


def patched(root: Path, overlay: dict[str, bytes | None]) -> PatchedTree:
    return PatchedTree(root, overlay, Series("s", ">=0.0.0", 1, False, None), ())


def test_context_never_reads_behind_a_symlinked_directory(tmp_path: Path, outside: Path) -> None:
    root = tree_with_link(tmp_path, outside)
    (root / "main.go").write_text("package main\n")
    tree = patched(root, {"pkg/file.go": b"overlay behind a link"})
    with pytest.raises(UnsafeSourceError, match="passes through the symlink 'pkg'"):
        list(context.tree_members(tree, "kube-router/"))


def test_context_keeps_links_as_links(tmp_path: Path, outside: Path) -> None:
    root = tree_with_link(tmp_path, outside)
    (root / "main.go").write_text("package main\n")
    written = context.write_tar(tmp_path / "c.tar", context.tree_members(patched(root, {}), "kr/"), 0)
    with tarfile.open(written.path) as tar:
        link = tar.getmember("kr/pkg")
        assert link.issym() and link.linkname == str(outside)
        assert "kr/pkg/file.go" not in tar.getnames()  # the link is never followed


def test_materialize_writes_a_new_tree_and_never_through_a_link(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "file.go").write_text("secret\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "docs").symlink_to("pkg")
    out = tmp_path / "out"
    patched(root, {"pkg/file.go": b"patched\n", "pkg/new.go": b"new\n"}).materialize(out)
    assert (out / "pkg" / "file.go").read_text() == "patched\n"
    assert (out / "pkg" / "new.go").read_text() == "new\n"
    assert os.access(out / "run.sh", os.X_OK)
    assert (out / "docs").readlink() == Path("pkg")
    escaping = tmp_path / "tree2"
    escaping.mkdir()
    (escaping / "up").symlink_to("../outside")
    with pytest.raises(UnsafeSourceError, match="resolves outside the tree"):
        patched(escaping, {}).materialize(tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "outside", "tree", "tree2"]


def test_digest_refuses_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / os.fsdecode(b"caf\xe9.go")).write_text("x")
    with pytest.raises(UnsafeSourceError, match="not valid UTF-8"):
        digest_tree(root)


def test_digest_counts_a_symlinked_directory_as_a_link(tmp_path: Path, outside: Path) -> None:
    root = tree_with_link(tmp_path, outside)
    before = digest_tree(root)
    (outside / "more.go").write_text("changes behind the link do not count\n")
    assert digest_tree(root) == before
