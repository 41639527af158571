"""Strict application of unified diffs: exact context, no fuzz, offsets allowed.

A hunk applies only where every context and removed line matches byte for byte; the
search starts at the line the hunk names and widens outwards (so one series can serve
several releases whose files moved a little), never before the previous hunk. Failure
names the patch, the file and the hunk. Nothing is written here: the caller receives the
new contents and decides where they go.

Why not ``git apply`` (which applies as strictly, and is the oracle this module is tested
against in tests/unit/test_unidiff_oracle.py): it writes into the tree itself, and the tree
is hostile input here (a fork's symlinks, a mirror's odd modes). This module only
computes contents; every byte lands through :class:`safefs.Beneath`, which cannot leave
the destination, and ``check-patches`` gets a per-hunk verdict without a scratch copy of
each release's tree. GNU ``patch`` is worse on both counts (fuzz by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PatchError
from .safefs import Beneath
from .validate import relative_path

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class Hunk:
    header: str
    old_start: int
    old: list[bytes] = field(default_factory=list)
    new: list[bytes] = field(default_factory=list)


@dataclass
class FilePatch:
    old_path: str | None  # None: file is created
    new_path: str | None  # None: file is deleted
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        path = self.new_path or self.old_path
        assert path is not None
        return path


def _strip_prefix(raw: bytes, patch_name: str) -> str | None:
    name = raw.split(b"\t", 1)[0].decode("utf-8").strip()
    if name == "/dev/null":
        return None
    parts = name.split("/", 1)
    if len(parts) != 2:
        raise PatchError(f"{patch_name}: file name {name!r} has no a/ or b/ prefix", "make the patch with -p1 paths")
    path = parts[1]
    relative_path(path, f"path in {patch_name}")
    return path


def parse(text: bytes, patch_name: str) -> list[FilePatch]:
    lines = text.splitlines(keepends=True)
    files: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(b"--- ") and i + 1 < len(lines) and lines[i + 1].startswith(b"+++ "):
            current = FilePatch(_strip_prefix(line[4:], patch_name), _strip_prefix(lines[i + 1][4:], patch_name))
            if current.old_path is None and current.new_path is None:
                raise PatchError(f"{patch_name}: a file patch names /dev/null twice", "fix the patch")
            files.append(current)
            i += 2
            while i < len(lines) and lines[i].startswith(b"@@"):
                i = _parse_hunk(lines, i, current, patch_name)
            continue
        i += 1
    if not files:
        raise PatchError(f"{patch_name} contains no unified diff", "regenerate it with `git diff` or `diff -u`")
    return files


def _parse_hunk(lines: list[bytes], i: int, target: FilePatch, patch_name: str) -> int:
    header = lines[i].decode("utf-8", errors="replace").rstrip()
    match = _HUNK_RE.match(header)
    if not match:
        raise PatchError(f"{patch_name}: malformed hunk header {header!r}", "fix the patch")
    old_count = int(match[2]) if match[2] is not None else 1
    new_count = int(match[4]) if match[4] is not None else 1
    hunk = Hunk(header, int(match[1]))
    i += 1
    seen_old = seen_new = 0
    while i < len(lines) and (seen_old < old_count or seen_new < new_count):
        line = lines[i]
        tag, body = line[:1], line[1:]
        if tag == b" " or line in (b"\n", b"\r\n"):
            body = body if tag == b" " else line
            hunk.old.append(body)
            hunk.new.append(body)
            seen_old += 1
            seen_new += 1
        elif tag == b"-":
            hunk.old.append(body)
            seen_old += 1
        elif tag == b"+":
            hunk.new.append(body)
            seen_new += 1
        elif tag == b"\\":
            _drop_newline(hunk, lines[i - 1][:1])
        else:
            break
        i += 1
    if i < len(lines) and lines[i].startswith(b"\\"):
        _drop_newline(hunk, lines[i - 1][:1])
        i += 1
    if seen_old != old_count or seen_new != new_count:
        raise PatchError(
            f"{patch_name}: hunk {header!r} of {target.path} has {seen_old}/{seen_new} lines, "
            f"its header says {old_count}/{new_count}",
            "the patch is truncated or was edited by hand; regenerate it",
        )
    target.hunks.append(hunk)
    return i


def _drop_newline(hunk: Hunk, previous_tag: bytes) -> None:
    """Handle '\\ No newline at end of file' for the line just read."""
    sides = {b"-": [hunk.old], b"+": [hunk.new], b" ": [hunk.old, hunk.new]}.get(previous_tag, [])
    for side in sides:
        if side and side[-1].endswith(b"\n"):
            side[-1] = side[-1][:-1]


def _find(haystack: list[bytes], needle: list[bytes], expected: int, floor: int) -> int | None:
    """Position of ``needle`` nearest to ``expected`` at or after ``floor``."""
    limit = len(haystack) - len(needle)
    if limit < floor:
        return None
    expected = min(max(expected, floor), limit)
    for distance in range(0, max(expected - floor, limit - expected) + 1):
        for pos in (expected - distance, expected + distance):
            if floor <= pos <= limit and haystack[pos : pos + len(needle)] == needle:
                return pos
    return None


def apply_file(original: bytes | None, patch: FilePatch, patch_name: str) -> bytes | None:
    """New content of one file (None when the patch deletes it)."""
    if patch.old_path is None:
        if original is not None:
            raise PatchError(
                f"{patch_name}: creates {patch.path}, which already exists",
                "the tree is not the one the patch was made for",
            )
        return b"".join(patch.hunks[0].new) if patch.hunks else b""
    if original is None:
        raise PatchError(
            f"{patch_name}: {patch.path} does not exist in the tree",
            "the tree is not the one the patch was made for",
        )
    lines = original.splitlines(keepends=True)
    floor = 0
    delta = 0
    for number, hunk in enumerate(patch.hunks, start=1):
        expected = max(hunk.old_start - 1, 0) + delta
        if not hunk.old:  # pure insertion at a line number
            pos: int | None = min(max(hunk.old_start + delta, 0), len(lines))
        else:
            pos = _find(lines, hunk.old, expected, floor)
        if pos is None:
            raise PatchError(
                f"{patch_name}: hunk #{number} ({hunk.header}) does not apply to {patch.path}",
                "the context differs from this release; refresh the series for it",
            )
        lines[pos : pos + len(hunk.old)] = hunk.new
        floor = pos + len(hunk.new)
        delta += len(hunk.new) - len(hunk.old) + (pos - expected)
    if patch.new_path is None:
        if lines:
            raise PatchError(f"{patch_name}: deleting {patch.path} left content behind", "regenerate the patch")
        return None
    return b"".join(lines)


def apply(patch_file: Path, read: dict[str, bytes | None] | None, base: Path) -> dict[str, bytes | None]:
    """Apply one patch on top of ``base`` plus already-patched contents ``read``.

    The tree is read through ``safefs``: a file the patch names that is a symlink, or that
    lies behind a symlinked directory, is refused rather than read from wherever it leads;
    so is a new file the patch would put behind one."""
    overlay = dict(read or {})
    with Beneath(base, "source tree", "the tree is not the one the patch was made for") as tree:
        for file_patch in parse(patch_file.read_bytes(), patch_file.name):
            source = file_patch.old_path or file_patch.path
            original = overlay[source] if source in overlay else tree.read(source)
            tree.lstat(file_patch.path)  # refuses a target behind a symlinked directory
            result = apply_file(original, file_patch, patch_file.name)
            if file_patch.old_path and file_patch.new_path and file_patch.old_path != file_patch.new_path:
                overlay[file_patch.old_path] = None
            overlay[file_patch.path] = result
    return overlay
