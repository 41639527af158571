"""The strict applier agrees with ``git apply`` (the maintained tool it stands beside):
same verdict, and the same bytes when both apply. ``git apply`` runs outside any
repository here, as a patch program."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp import unidiff
from kube_router_sctp.errors import PatchError

ORIGINAL = b"".join(b"line %d\n" % n for n in range(1, 41))
CHANGED = ORIGINAL.replace(b"line 20\n", b"line 20\nsctp 20\n").replace(b"line 30\n", b"SCTP 30\n")


def make_patch(tmp_path: Path, old: bytes | None, new: bytes | None, name: str = "f.go") -> Path:
    """A real git diff of the two contents (git, not this module, writes the patch)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for side, content in ((a, old), (b, new)):
        side.mkdir()
        if content is not None:
            (side / name).write_bytes(content)
    diff = subprocess.run(
        ["git", "diff", "--no-index", "--no-prefix", "--src-prefix=a/", "--dst-prefix=b/", "a", "b"],
        cwd=tmp_path, capture_output=True, check=False,
    )  # fmt: skip
    assert diff.returncode == 1, diff.stderr
    # --no-index names the files a/a/f.go: make them a/f.go, as a -p1 patch of one tree.
    text = diff.stdout.replace(b" a/a/", b" a/").replace(b" b/b/", b" b/").replace(b"a/b/", b"b/")
    shutil.rmtree(a)
    shutil.rmtree(b)
    patch = tmp_path / "0001-change.patch"
    patch.write_bytes(text)
    return patch


def by_git(tmp_path: Path, patch: Path, tree: bytes | None, name: str = "f.go") -> bytes | str | None:
    work = tmp_path / "git-tree"
    work.mkdir()
    if tree is not None:
        (work / name).write_bytes(tree)
    result = subprocess.run(["git", "apply", str(patch)], cwd=work, capture_output=True, check=False)
    if result.returncode:
        return "refused"
    target = work / name
    return target.read_bytes() if target.exists() else None


def by_us(tmp_path: Path, patch: Path, tree: bytes | None, name: str = "f.go") -> bytes | str | None:
    work = tmp_path / "our-tree"
    work.mkdir()
    if tree is not None:
        (work / name).write_bytes(tree)
    try:
        return unidiff.apply(patch, None, work)[name]
    except PatchError:
        return "refused"


CASES = {
    "exact": (ORIGINAL, CHANGED, ORIGINAL),
    "moved down by five lines": (ORIGINAL, CHANGED, b"new\n" * 5 + ORIGINAL),
    "moved up by three lines": (ORIGINAL, CHANGED, ORIGINAL.replace(b"line 2\nline 3\nline 4\n", b"")),
    "a context line differs": (ORIGINAL, CHANGED, ORIGINAL.replace(b"line 19\n", b"line nineteen\n")),
    "a removed line differs": (ORIGINAL, CHANGED, ORIGINAL.replace(b"line 30\n", b"line 30 \n")),
    "whitespace in context": (ORIGINAL, CHANGED, ORIGINAL.replace(b"line 21\n", b"line  21\n")),
    "already applied": (ORIGINAL, CHANGED, CHANGED),
    "creates a file that is absent": (None, b"package main\n", None),
    "creates a file that exists": (None, b"package main\n", b"package other\n"),
    "deletes the file": (ORIGINAL, None, ORIGINAL),
    "no newline at end": (b"a\nb\nc", b"a\nB\nc", b"a\nb\nc"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_verdict_and_bytes_as_git_apply(tmp_path: Path, case: str) -> None:
    old, new, tree = CASES[case]
    patch = make_patch(tmp_path, old, new)
    assert by_us(tmp_path, patch, tree) == by_git(tmp_path, patch, tree)
