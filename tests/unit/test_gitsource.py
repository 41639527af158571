"""git sources: a tree is exported only below its destination, whatever its links say;
a source string never reaches git as an option."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kube_router_sctp import gitsource
from kube_router_sctp.errors import FetchError, UnsafeSourceError
from tests.support import hostile


def test_link_chain_tree_is_refused_and_nothing_is_written_outside(tmp_path: Path) -> None:
    repo, commit = hostile.link_chain_repo(tmp_path / "evil.git")
    dest = tmp_path / "cache" / "tmp" / "scratch"  # three levels below tmp_path, as CHAIN expects
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeSourceError) as caught:
        gitsource.export(repo, commit, dest)
    assert "member 'b/sentinel/evil' passes through the symlink 'b'" in caught.value.one_line()
    assert not (tmp_path / "sentinel").exists()
    assert not list(tmp_path.rglob("evil"))


def test_link_chain_alone_is_refused_once_written(tmp_path: Path) -> None:
    # Without a member behind it the chain writes nothing outside, but a later reader (a
    # Go build, docker build, a user) would follow it: the tree is refused.
    repo = tmp_path / "evil.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    dot = hostile.git(repo, "hash-object", "-w", "--stdin", stdin=b".")
    chain = hostile.git(repo, "hash-object", "-w", "--stdin", stdin=b"a/a/a/../../..")
    root = hostile.git(repo, "mktree", stdin=f"120000 blob {dot}\ta\n120000 blob {chain}\tb\n".encode())
    with pytest.raises(UnsafeSourceError, match="member 'b' is a symlink that resolves outside the tree"):
        gitsource.export(repo, root, tmp_path / "dest")


def test_non_utf8_name_is_one_clear_refusal(tmp_path: Path) -> None:
    repo, commit = hostile.link_chain_repo(tmp_path / "evil.git", name=b"caf\xe9.go")
    with pytest.raises(
        UnsafeSourceError, match=r"member 'b/sentinel/caf\\\\xe9.go' has a name that is not valid UTF-8"
    ):
        gitsource.export(repo, commit, tmp_path / "dest")


def test_a_source_starting_with_a_dash_is_not_an_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    source = f"--upload-pack=touch {marker}"
    calls: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(args: list[str], *rest: object, **kwargs: object) -> object:
        calls.append(list(args))
        return real_run(args, *rest, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(gitsource.subprocess, "run", recording_run)
    with pytest.raises(FetchError) as caught:
        gitsource.git_dir(source, tmp_path / "mirrors", offline=False)
    assert not marker.exists()
    assert "could not clone" in caught.value.message
    clone = next(call for call in calls if "clone" in call)
    assert clone[clone.index(source) - 1] == "--"  # a repository name, never an option


def test_ext_transport_is_not_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(FetchError):
        gitsource.git_dir(f"ext::sh -c touch% {marker}", tmp_path / "mirrors", offline=False)
    assert not marker.exists()


def _tree(repo: Path, entries: list[tuple[str, bytes, str]]) -> str:
    """A tree of (mode, content, name) blobs in a new bare repository."""
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    lines = [f"{mode} blob {hostile.git(repo, 'hash-object', '-w', '--stdin', stdin=data)}\t{name}\n"
             for mode, data, name in entries]  # fmt: skip
    return hostile.git(repo, "mktree", stdin="".join(lines).encode())


def test_a_git_tree_larger_than_the_unpacked_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Git stores a blob of zeros in almost nothing: a repository can hold gigabytes that
    # export would write (and hold in memory) where a tarball is bounded to MAX_BYTES.
    from kube_router_sctp import archive

    monkeypatch.setattr(archive, "MAX_BYTES", 1 << 20)
    root = _tree(tmp_path / "bomb.git", [("100644", b"\0" * (600 << 10), "a"), ("100644", b"\0" * (600 << 10), "b")])
    with pytest.raises(UnsafeSourceError, match="member 'b' makes the tree larger than 1 MiB unpacked"):
        gitsource.export(tmp_path / "bomb.git", root, tmp_path / "dest")


def test_a_git_tree_with_too_many_members_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_router_sctp import archive

    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    root = _tree(tmp_path / "many.git", [("100644", b"x", name) for name in "abcd"])
    with pytest.raises(UnsafeSourceError, match="exceeds the member limit"):
        gitsource.export(tmp_path / "many.git", root, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


def test_a_symlink_target_longer_than_a_path_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "long.git", [("120000", b"a/" * 4096, "link")])
    with pytest.raises(UnsafeSourceError, match="member 'link' is a symlink whose target is longer than"):
        gitsource.export(tmp_path / "long.git", root, tmp_path / "dest")
