"""kube-router from a git repository: resolve a tag, export its tree, report holes.

The export reads objects with ``git cat-file --batch`` instead of ``git archive`` so that
a repository missing some blobs (partial mirrors drop files of 4 MiB and more) yields a
precise list of what is missing rather than a failed archive. The caller decides what to
do with the holes; nothing here silently leaves one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import archive, log
from .archive import link_stays_inside
from .errors import FetchError, UnsafeSourceError
from .safefs import Beneath, scratch_tree


@dataclass(frozen=True)
class MissingBlob:
    path: str
    blob: str
    mode: str


def looks_like_git(location: str) -> bool:
    """A local git repository (bare or not) or a git URL."""
    scheme = urlsplit(location).scheme
    if scheme in ("git", "ssh") or (location.endswith(".git") and scheme in ("http", "https")):
        return True
    path = Path(location)
    return ((path / "HEAD").is_file() and (path / "objects").is_dir()) or (path / ".git").exists()


# Transports a source may use: never ``ext::`` (runs a command) or anything unknown.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh"}


def _git(gitdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, **_GIT_ENV)
    try:
        return subprocess.run(["git", f"--git-dir={gitdir}", *args], capture_output=True, check=check, env=env)
    except FileNotFoundError as exc:
        raise FetchError("git is not installed", "install git to use a git repository as source") from exc
    except subprocess.CalledProcessError as exc:
        message = exc.stderr.decode(errors="replace").strip().splitlines()
        raise FetchError(
            f"git {' '.join(args[:2])} failed in {gitdir}: {message[-1] if message else exc.returncode}",
            "check that the kube-router source is a git repository with the release tags",
        ) from exc


def git_dir(location: str, mirror_root: Path, offline: bool) -> Path:
    """The git directory for ``location``; remote URLs are mirrored into the cache."""
    if looks_like_git(location) and Path(location).exists():
        path = Path(location).resolve()
        return path / ".git" if (path / ".git").is_dir() else path
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    mirror = mirror_root / digest
    if mirror.is_dir():
        if not offline:
            log.info(f"updating git mirror of {location}")
            _git(mirror, "fetch", "--prune", "--tags", "origin")
        return mirror
    if offline:
        raise FetchError(
            f"{location} has not been mirrored yet and --offline forbids cloning it",
            "run once online, or pass a local repository path as --kube-router-source",
        )
    log.info(f"mirroring {location}")
    mirror_root.mkdir(parents=True, exist_ok=True)
    partial = mirror.with_suffix(".part")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    try:
        subprocess.run(
            # "--": a source starting with "-" is a repository name, never an option.
            ["git", "clone", "--mirror", "--quiet", "--", location, str(partial)],
            check=True,
            capture_output=True,
            env=dict(os.environ, **_GIT_ENV),
        )
    except subprocess.CalledProcessError as exc:
        subprocess.run(["rm", "-rf", str(partial)], check=False)
        raise FetchError(
            f"could not clone {location}: {exc.stderr.decode(errors='replace').strip()[-200:]}",
            "check the URL, or point --kube-router-source at a local mirror",
        ) from exc
    partial.replace(mirror)
    return mirror


def resolve(gitdir: Path, ref: str) -> str:
    """The commit a tag, branch or commit id names."""
    result = _git(gitdir, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
    if result.returncode != 0:
        raise FetchError(
            f"{ref} is not in the git repository {gitdir}",
            "fetch the release tags into that repository, or choose a release it has",
        )
    return result.stdout.decode().strip()


def commit_time(gitdir: Path, commit: str) -> int:
    return int(_git(gitdir, "show", "-s", "--format=%ct", commit).stdout.decode().strip())


def export(gitdir: Path, commit: str, dest: Path) -> list[MissingBlob]:
    """Write the tree of ``commit`` below ``dest``; return the blobs the repository lacks.

    Written through ``safefs``: a member whose path passes through a symlink of the tree,
    or a symlink that resolves outside it once written, is refused, and nothing is kept.
    """
    listing = _git(gitdir, "ls-tree", "-r", "-z", "--full-tree", commit).stdout
    what = f"git tree {commit[:12]}"
    entries: list[tuple[str, str, str]] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, blob = meta.decode().split()
        try:
            path = raw_path.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            shown = raw_path.decode("utf-8", errors="backslashreplace")
            raise UnsafeSourceError(
                f"refusing {what}: member {shown!r} has a name that is not valid UTF-8", "refusing this tree"
            ) from None
        if kind == "commit":
            log.warn(f"git submodule {path} is not exported (kube-router has none)")
            continue
        if ".git" in path.split("/"):
            raise UnsafeSourceError(f"git tree member {path} names a .git directory", "refusing this tree")
        entries.append((mode, blob, path))

    missing: list[MissingBlob] = []
    with scratch_tree(dest, what, "refusing this tree") as tree:
        if len(entries) > archive.MAX_MEMBERS:
            raise tree.refuse(entries[archive.MAX_MEMBERS][2], "exceeds the member limit")
        for _, _, path in entries:
            tree.parts(path)  # every name checked before a byte is written
        proc = subprocess.Popen(
            ["git", f"--git-dir={gitdir}", "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            _write_blobs(proc, entries, tree, what, missing)
        finally:
            proc.kill()
            proc.wait()
    return missing


def _write_blobs(
    proc: subprocess.Popen[bytes],
    entries: list[tuple[str, str, str]],
    tree: Beneath,
    what: str,
    missing: list[MissingBlob],
) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def feed() -> None:
        try:
            for _, blob, _ in entries:
                stdin.write(f"{blob}\n".encode())
            stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = proc.stdout
    total = 0
    for mode, blob, path in entries:
        header = out.readline().decode().split()
        if len(header) == 2 and header[1] == "missing":
            missing.append(MissingBlob(path, blob, mode))
            continue
        size = int(header[2])
        # Bounded like a tarball, before a byte is read: git stores gigabytes of zeros
        # in almost nothing, and a blob is streamed to its file, never held in memory.
        total += size
        if total > archive.MAX_BYTES:
            raise tree.refuse(path, f"makes the tree larger than {_size(archive.MAX_BYTES)} unpacked")
        if mode == "120000":
            if size > MAX_LINK_TARGET:
                raise tree.refuse(path, f"is a symlink whose target is longer than {MAX_LINK_TARGET} bytes")
            data = out.read(size)
            try:
                target = data.decode("utf-8")
            except UnicodeDecodeError:
                raise tree.refuse(path, "is a symlink whose target is not valid UTF-8") from None
            if not link_stays_inside(path, target):
                raise UnsafeSourceError(
                    f"git tree member {path} is a symlink leaving the tree (-> {target})", "refusing this tree"
                )
            tree.symlink(path, target)
        else:
            tree.write(path, out, 0o755 if mode == "100755" else 0o644, size=size)
        out.read(1)  # the newline after each object
    writer.join()


MAX_LINK_TARGET = 4095  # PATH_MAX less its NUL: no longer symlink can be made


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"


def blob_id(data: bytes) -> str:
    """The git blob id of some content (to verify a restored file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
