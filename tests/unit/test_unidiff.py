"""Strict patch application: exact context, offsets allowed, no fuzz, hunks named."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_router_sctp import unidiff
from kube_router_sctp.errors import PatchError

ORIGINAL = "".join(f"line {n}\n" for n in range(1, 21))

PATCH = """Description: change line 10
Origin: vendor
Last-Update: 2026-11-26
---
diff --git a/pkg/file.go b/pkg/file.go
--- a/pkg/file.go
+++ b/pkg/file.go
@@ -8,5 +8,6 @@
 line 8
 line 9
-line 10
+line ten
+line ten and a half
 line 11
 line 12
"""


def tree(tmp_path: Path, text: str = ORIGINAL) -> Path:
    (tmp_path / "pkg").mkdir(parents=True, exist_ok=True)
    (tmp_path / "pkg" / "file.go").write_text(text)
    return tmp_path


def patch_file(tmp_path: Path, text: str, name: str = "0001-change.patch") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_applies_exactly(tmp_path: Path) -> None:
    base = tree(tmp_path / "t")
    overlay = unidiff.apply(patch_file(tmp_path, PATCH), None, base)
    new = overlay["pkg/file.go"]
    assert new is not None
    assert b"line ten\nline ten and a half\nline 11\n" in new
    assert b"line 10\n" not in new
    assert (base / "pkg" / "file.go").read_text() == ORIGINAL  # the tree is never modified


def test_applies_with_offset(tmp_path: Path) -> None:
    base = tree(tmp_path / "t", "extra\nextra\nextra\n" + ORIGINAL)
    overlay = unidiff.apply(patch_file(tmp_path, PATCH), None, base)
    assert b"line ten\n" in (overlay["pkg/file.go"] or b"")


def test_refuses_fuzz_and_names_the_hunk(tmp_path: Path) -> None:
    base = tree(tmp_path / "t", ORIGINAL.replace("line 12\n", "line twelve\n"))
    with pytest.raises(
        PatchError, match=r"0001-change.patch: hunk #1 \(@@ -8,5 \+8,6 @@\) does not apply to pkg/file.go"
    ):
        unidiff.apply(patch_file(tmp_path, PATCH), None, base)


def test_whitespace_difference_is_not_ignored(tmp_path: Path) -> None:
    base = tree(tmp_path / "t", ORIGINAL.replace("line 9\n", "line 9 \n"))
    with pytest.raises(PatchError, match="does not apply"):
        unidiff.apply(patch_file(tmp_path, PATCH), None, base)


def test_new_file_and_second_patch_on_top(tmp_path: Path) -> None:
    base = tree(tmp_path / "t")
    create = patch_file(
        tmp_path,
        "--- /dev/null\n+++ b/pkg/new_sctp_test.go\n@@ -0,0 +1,2 @@\n+package pkg\n+// test\n",
        "0002-new.patch",
    )
    overlay = unidiff.apply(patch_file(tmp_path, PATCH), None, base)
    overlay = unidiff.apply(create, overlay, base)
    assert overlay["pkg/new_sctp_test.go"] == b"package pkg\n// test\n"
    again = patch_file(tmp_path, PATCH.replace("line 9\n-line 10\n", "line 9\n-line 10\n"), "0003-again.patch")
    with pytest.raises(PatchError, match="does not apply"):
        unidiff.apply(again, overlay, base)  # line 10 is already gone in the overlay


def test_creating_an_existing_file_fails(tmp_path: Path) -> None:
    base = tree(tmp_path / "t")
    create = patch_file(tmp_path, "--- /dev/null\n+++ b/pkg/file.go\n@@ -0,0 +1 @@\n+x\n")
    with pytest.raises(PatchError, match="already exists"):
        unidiff.apply(create, None, base)


def test_missing_target_file_fails(tmp_path: Path) -> None:
    base = tmp_path / "empty"
    base.mkdir()
    with pytest.raises(PatchError, match="does not exist in the tree"):
        unidiff.apply(patch_file(tmp_path, PATCH), None, base)


def test_truncated_hunk_is_detected(tmp_path: Path) -> None:
    truncated = PATCH.rsplit(" line 12\n", 1)[0]
    with pytest.raises(PatchError, match="its header says 5/6"):
        unidiff.parse(truncated.encode(), "0001-change.patch")


def test_path_escaping_the_tree_is_refused() -> None:
    evil = "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-x\n+y\n"
    with pytest.raises(Exception, match=r"invalid path in evil.patch '\.\./etc/passwd'"):
        unidiff.parse(evil.encode(), "evil.patch")


def test_no_newline_at_end_of_file(tmp_path: Path) -> None:
    base = tmp_path / "t"
    base.mkdir()
    (base / "f").write_text("a\nb")
    patch = (
        "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
    )
    overlay = unidiff.apply(patch_file(tmp_path, patch), None, base)
    assert overlay["f"] == b"a\nc"


def test_deleting_a_file(tmp_path: Path) -> None:
    base = tmp_path / "t"
    base.mkdir()
    (base / "gone").write_text("a\nb\n")
    overlay = unidiff.apply(patch_file(tmp_path, "--- a/gone\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"), None, base)
    assert overlay["gone"] is None
