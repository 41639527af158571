"""Hostile input through the real command line: refused before anything is rendered,
built or cached, with the offending member or value named."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kube_router_sctp.errors import UnsafeSourceError
from tests.support import env
from tests.support.upstream import Upstream


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def evil_tarball(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member_name, member_kind, member_link in (("kube-router-0.3.2/", tarfile.DIRTYPE, ""), (name, kind, link)):
            info = tarfile.TarInfo(member_name)
            info.type = member_kind
            info.linkname = member_link
            tar.addfile(info, io.BytesIO(b"") if member_kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize(
    ("member", "kind", "link", "why"),
    [
        ("kube-router-0.3.2/../../evil", tarfile.REGTYPE, "", "contains '..'"),
        ("/etc/evil", tarfile.REGTYPE, "", "has an absolute path"),
        ("kube-router-0.3.2/x", tarfile.SYMTYPE, "/etc/passwd", "symlink leaving the tree"),
        ("kube-router-0.3.2/y", tarfile.LNKTYPE, "/etc/shadow", "hard link leaving the tree"),
        ("kube-router-0.3.2/dev", tarfile.CHRTYPE, "", "is a device or FIFO"),
    ],
)
def test_hostile_source_tarball(tmp_path: Path, member: str, kind: bytes, link: str, why: str) -> None:
    tarball = evil_tarball(tmp_path / "kube-router.tar.gz", member, kind, link)
    cache = tmp_path / "cache"
    result = env.run_cli("patch", "--kube-router-source", str(tarball), "--cache-dir", str(cache))
    assert result.returncode == 11  # UnsafeSourceError (was 4, shared with VerificationError)
    line = error_line(result.stderr)
    assert f"member {member!r}" in line and why in line
    assert not list((cache / "trees").glob("*")) if (cache / "trees").exists() else True
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kube-router-version", "v0.3.2\nRUN curl x|sh"], "invalid kube-router version"),
        (["--kube-router-version", "v0.3.2'; id; '"], "invalid kube-router version"),
        (["--runtime-base", "alpine:3.10\nUSER root"], "invalid runtime base image"),
        (["--runtime-base", 'alpine"$(id)"'], "invalid runtime base image"),
        (["--ipvsadm-mirror", 'https://mirror.example/"; rm -rf /'], "invalid ipvsadm mirror"),
        (["--debian-mirror", "http://mirror.example/debian\nRUN id"], "invalid Debian mirror"),
        (["--go-proxy", "https://proxy.example/`id`"], "invalid Go module proxy"),
        (["--label", "team=net\nRUN id"], "invalid label team value"),
        (["--label", 'team=a"b'], "invalid label team value"),
        (["--label", "Team=x"], "invalid label key"),
        # C1 controls, Unicode line separators and bidi overrides: a line break to some
        # parsers, a reordered text to whoever reads the label or the URL later
        (["--label", "team=a\x85b"], "invalid label team value"),
        (["--label", "team=a\u2028LABEL x=y"], "invalid label team value"),
        (["--label", "team=\u202egnp.exe"], "invalid label team value"),
        (["--debian-mirror", "http://mirror.example/\u2029debian"], "invalid Debian mirror"),
        (["--kube-router-source", "/tmp/\u202ekr"], "invalid kube-router source path"),
        # a Debian kernel spec reaches the mirror's URLs and cache paths: checked whole, at once
        (["--kernel", "debian:trixie\n"], "invalid --kernel"),
        (["--kernel", "debian:6.1.0-1\nx"], "invalid --kernel"),
        (["--fallback-kernel", "debian:`id`"], "invalid --fallback-kernel"),
        (["--fallback-kernel", "debian:$(id)"], "invalid --fallback-kernel"),
        (["--push", "registry:5000/ns\n"], "invalid --push target"),
        (["--image-name", "kube-router;id"], "invalid image name"),
    ],
)
def test_hostile_values_are_rejected_before_rendering(args: list[str], message: str) -> None:
    result = env.run_cli("render", *args)
    assert result.returncode == 2
    assert result.stdout == ""  # not a single line of Dockerfile
    assert message in error_line(result.stderr)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[families.debian]\nsuite = "bookworm main\\nRUN id"\n', "families.debian.suite"),
        ('[families.debian]\ntag-suffix = "-debian$(id)"\n', "families.debian.tag-suffix"),
        ('[ipvsadm.releases."1.31"]\nfiles = [{ name = "../ipvsadm-1.31.tar.xz", sha256 = "' + "a" * 64 + '" }]\n',
         'ipvsadm.releases."1.31".files[0].name'),
        ('[[kube-router.lines]]\nname = "dep"\nversions = ">=0.3.0, <1.1.0"\nlayout = "gopath"\n'
         'version-package = "github.com/x/y`id`"\nversion-vars = ["version", "buildDate"]\n'
         'gobgp = { dir = "vendor/gobgp" }\ngo = { debian = "apt:golang-1.19-go" }\n',
         "kube-router.lines[0].version-package"),
        ('[build]\noffline = "false"\n', "build.offline"),
    ],
)  # fmt: skip
def test_hostile_values_in_a_user_config_file(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    result = env.run_cli("render", "--base-family", "debian", env={"KUBE_ROUTER_SCTP_CONFIG": str(config)})
    assert result.returncode == 2
    assert result.stdout == ""  # not a single line of Dockerfile
    line = error_line(result.stderr)
    assert key in line and str(config) in line


def test_patch_index_pointing_outside_patches(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(env.PROJECT / "patches", project / "patches")
    shutil.copytree(env.PROJECT / "images", project / "images")
    shutil.copytree(env.PROJECT / "ipvsadm", project / "ipvsadm")
    index = project / "patches" / "kube-router" / "series.toml"
    index.write_text(index.read_text().replace('name = "v0.3"', 'name = "../../../etc"'))
    result = env.run_cli("render", env={"KUBE_ROUTER_SCTP_PROJECT_DIR": str(project)})
    assert result.returncode == 5
    assert "does not name a directory inside patches/kube-router" in error_line(result.stderr)


def test_moved_tag_is_refused_unless_the_pin_is_updated(tmp_path: Path, upstream: Upstream) -> None:
    repo = tmp_path / "kube-router.git"
    subprocess.run(["git", "clone", "-q", "--mirror", "--shared", upstream.repository(), str(repo)], check=True)
    subprocess.run(["git", f"--git-dir={repo}", "tag", "-f", "v0.3.2", "v0.3.1"], check=True, capture_output=True)
    result = env.run_cli("patch", "--kube-router-source", str(repo), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 4
    line = error_line(result.stderr)
    assert "tag v0.3.2" in line and "the tag moved" in line and "update the pin on purpose" in line
    # Updating the pin on purpose (a user config with the new commit and tree) is accepted.
    pin = env.run_cli("pin", "--kube-router-source", str(repo), "v0.3.2", "--cache-dir", str(tmp_path / "cache"))
    assert pin.returncode == 0, pin.stderr[-1000:]
    config = tmp_path / "config.toml"
    config.write_text(pin.stdout)
    moved = subprocess.run(["git", f"--git-dir={repo}", "rev-parse", "v0.3.1^{commit}"], capture_output=True, text=True)
    assert moved.stdout.strip() in pin.stdout
    accepted = env.run_cli(
        "fetch", "--kube-router-source", str(repo), "--cache-dir", str(tmp_path / "cache"), "--ipvsadm-version", "1.31",
        env={"KUBE_ROUTER_SCTP_CONFIG": str(config)},
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr[-1000:]


# -- link chains: the outside review's attack, through every command that exports -------------
@pytest.mark.parametrize(
    ("command", "levels"),
    [
        ("pin", 3),  # scratch: <cache>/tmp/pin-XXXX
        ("fetch", 4),  # scratch: <cache>/tmp/kube-router-XXXX/tree
        ("patch", 4),
    ],
)
def test_link_chain_in_a_git_tree_writes_nothing_outside(tmp_path: Path, command: str, levels: int) -> None:
    from tests.support import hostile

    chain = "/".join(["a"] * levels + [".."] * levels)  # "." as text; <levels> up in reality
    repo, commit = hostile.link_chain_repo(tmp_path / "evil.git", chain=chain)
    cache = tmp_path / "cache"
    config = tmp_path / "config.toml"
    # The review pinned the hostile release first (as `pin` told it to), then fetched it.
    config.write_text(f'[kube-router.releases]\n"v0.3.2" = {{ commit = "{commit}", date = 1, '
                      f'tree-sha256 = "{"0" * 64}" }}\n')  # fmt: skip
    args = ["v0.3.2"] if command == "pin" else ["--ipvsadm-version", "1.31"]
    result = env.run_cli(command, "--kube-router-source", str(repo), "--cache-dir", str(cache), *args,
                         env={"KUBE_ROUTER_SCTP_CONFIG": str(config)})  # fmt: skip
    assert result.returncode == UnsafeSourceError.exit_code, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "member 'b/sentinel/evil' passes through the symlink 'b'" in line
    assert not (tmp_path / "sentinel").exists()
    assert not list(tmp_path.rglob("evil"))
    assert not list((cache / "trees").iterdir()) if (cache / "trees").exists() else True
    assert not list((cache / "tmp").iterdir())  # the scratch is gone
