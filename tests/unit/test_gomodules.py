"""Go modules on the host: go.sum and go.mod reading, Go's Hash1, hostile zips, the proxy layout."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from kube_router_sctp import gomodules
from kube_router_sctp.errors import UnsafeSourceError, VerificationError

ORACLE_FILES = {
    "go.mod": b"module example.com/oracle\n\ngo 1.19\n",
    "oracle.go": b"package oracle\n\n// Answer is the answer.\nconst Answer = 42\n",
    "B.txt": b"upper case sorts first\n",
    "a.txt": b"lower case sorts after\n",
    "sub/dir/c.go": b"package dir\n",
}
# Computed by Go itself, not by the code under test: this zip served from a file:// GOPROXY
# and fetched with `go mod download -json example.com/oracle@v1.0.0` (go1.26.8), whose
# "Sum" and "GoModSum" fields these are.
ORACLE_ZIP_H1 = "h1:svmXsHzXT1GwUB4fKdsn1kvB1qf80x3beEI3r7HU0zQ="
ORACLE_MOD_H1 = "h1:/CNtSzmm5ZOs86KujdysHcYNZCLgXgQ+KkQqdvGjHKQ="


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return path


def oracle_zip(tmp_path: Path) -> Path:
    return make_zip(tmp_path / "v1.0.0.zip", {f"example.com/oracle@v1.0.0/{n}": d for n, d in ORACLE_FILES.items()})


def test_hash1_of_a_zip_and_a_go_mod_is_what_go_computes(tmp_path: Path) -> None:
    assert gomodules.hash_zip(oracle_zip(tmp_path), "example.com/oracle", "v1.0.0") == ORACLE_ZIP_H1
    assert gomodules.hash_mod(ORACLE_FILES["go.mod"]) == ORACLE_MOD_H1
    assert gomodules.hash_mod(ORACLE_FILES["go.mod"] + b"\n") != ORACLE_MOD_H1


def test_go_sum_lines_pair_up_zip_and_go_mod_hashes() -> None:
    text = (
        f"example.com/oracle v1.0.0 {ORACLE_ZIP_H1}\n"
        f"example.com/oracle v1.0.0/go.mod {ORACLE_MOD_H1}\n"
        f"example.com/other v0.0.0-20200806055634-c6f0eba8f4d8/go.mod {ORACLE_MOD_H1}\n"
    )
    sums = gomodules.parse_go_sum(text, "go.sum")
    assert sums["example.com/oracle@v1.0.0"] == gomodules.Sum(
        "example.com/oracle", "v1.0.0", ORACLE_ZIP_H1, ORACLE_MOD_H1
    )
    assert sums["example.com/other@v0.0.0-20200806055634-c6f0eba8f4d8"].zip_h1 is None


@pytest.mark.parametrize(
    "line",
    [
        "example.com/oracle v1.0.0",  # no hash
        "example.com/oracle v1.0.0 h2:abc",  # not h1
        f"../../etc v1.0.0 {ORACLE_ZIP_H1}",  # a path that would leave the proxy tree
        f"example.com/oracle v1.0.0/../../x {ORACLE_ZIP_H1}",
        f"nodot/path v1.0.0 {ORACLE_ZIP_H1}",
        f"example.com/oracle 1.0.0 {ORACLE_ZIP_H1}",
    ],
)
def test_a_malformed_go_sum_line_is_refused(line: str) -> None:
    with pytest.raises(VerificationError, match="go.sum line 1"):
        gomodules.parse_go_sum(line + "\n", "go.sum")


def test_two_hashes_for_one_module_version_are_refused() -> None:
    text = f"example.com/oracle v1.0.0 {ORACLE_ZIP_H1}\nexample.com/oracle v1.0.0 {ORACLE_MOD_H1}\n"
    with pytest.raises(VerificationError, match="second, different hash"):
        gomodules.parse_go_sum(text, "go.sum")


GO_MOD = """module github.com/cloudnativelabs/kube-router/v2

go 1.22.0

require github.com/single/line v1.0.0 // indirect

require (
	github.com/osrg/gobgp/v3 v3.29.0
	"github.com/quoted/path" v0.1.0
	// a comment line
)
"""


def test_go_mod_requires_reads_lines_and_blocks() -> None:
    assert gomodules.go_mod_requires(GO_MOD) == {
        "github.com/single/line": "v1.0.0",
        "github.com/osrg/gobgp/v3": "v3.29.0",
        "github.com/quoted/path": "v0.1.0",
    }


def test_the_gobgp_command_comes_from_the_module_the_release_requires() -> None:
    requires = gomodules.go_mod_requires(GO_MOD)
    exact = gomodules.command_module("github.com/osrg/gobgp/v3/cmd/gobgp", requires)
    assert exact == ("github.com/osrg/gobgp/v3", "v3.29.0", "cmd/gobgp")
    # A line naming gobgp v4 for a release that requires v3 (kube-router v2.6) gets v3's command.
    assert gomodules.command_module("github.com/osrg/gobgp/v4/cmd/gobgp", requires) == exact
    old = {"github.com/osrg/gobgp": "v0.0.0-20210101133947-496b372f7b8d"}
    assert gomodules.command_module("github.com/osrg/gobgp/cmd/gobgp", old) == (
        "github.com/osrg/gobgp",
        "v0.0.0-20210101133947-496b372f7b8d",
        "cmd/gobgp",
    )
    assert gomodules.command_module("github.com/osrg/gobgp/v3/cmd/gobgp", old) == (
        "github.com/osrg/gobgp",
        "v0.0.0-20210101133947-496b372f7b8d",
        "cmd/gobgp",
    )
    assert gomodules.command_module("example.com/elsewhere/cmd/x", requires) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("example.com/other@v1.0.0/go.mod", "outside"),
        ("example.com/oracle@v1.0.0/../../../etc/passwd", "outside"),
        ("/example.com/oracle@v1.0.0/abs", "outside"),
        ("example.com/oracle@v1.0.0/a\\b", "outside"),
        ("example.com/oracle@v1.0.0/A.TXT", "twice"),  # a.txt is there too
    ],
)
def test_a_hostile_module_zip_is_refused_before_anything_is_read(tmp_path: Path, name: str, why: str) -> None:
    members = {f"example.com/oracle@v1.0.0/{n}": d for n, d in ORACLE_FILES.items()}
    members[name] = b"x"
    bundle = make_zip(tmp_path / "evil.zip", members)
    with pytest.raises(UnsafeSourceError, match=why):
        gomodules.hash_zip(bundle, "example.com/oracle", "v1.0.0")
    with pytest.raises(UnsafeSourceError, match=why):
        list(gomodules.zip_tree(bundle, "example.com/oracle", "v1.0.0", "gobgp/"))


def test_a_zip_bomb_is_refused_by_its_declared_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gomodules, "MAX_ZIP_BYTES", 1000)
    bundle = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr("example.com/oracle@v1.0.0/zeros", b"\0" * 5000)
    with pytest.raises(UnsafeSourceError, match="unpacks to more than"):
        gomodules.hash_zip(bundle, "example.com/oracle", "v1.0.0")


def test_a_damaged_zip_is_a_verification_failure(tmp_path: Path) -> None:
    bundle = tmp_path / "damaged.zip"
    bundle.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(VerificationError, match="not a readable zip"):
        gomodules.hash_zip(bundle, "example.com/oracle", "v1.0.0")


def test_module_files_become_build_context_members(tmp_path: Path) -> None:
    bundle = oracle_zip(tmp_path)
    tree = {name: data for name, data, _ in gomodules.zip_tree(bundle, "example.com/oracle", "v1.0.0", "src/")}
    assert tree == {f"src/{n}": d for n, d in ORACLE_FILES.items()}
    assert gomodules.read_zip_file(bundle, "example.com/oracle", "v1.0.0", "go.mod") == ORACLE_FILES["go.mod"]
    assert gomodules.read_zip_file(bundle, "example.com/oracle", "v1.0.0", "go.sum") is None


def test_the_file_proxy_layout_is_gos(tmp_path: Path) -> None:
    mod = tmp_path / "mod"
    mod.write_bytes(b"module github.com/Azure/go-ansiterm\n")

    def item(version: str, kind: str) -> gomodules.ModuleFile:
        module = "github.com/Azure/go-ansiterm"
        return gomodules.ModuleFile(module, version, kind, ORACLE_MOD_H1, "0" * 64, 1, mod, False)

    files = [item("v0.2.0", "mod"), item("v0.10.0", "mod"), item("v0.10.0", "zip")]
    members = {name: content for name, content, _ in gomodules.proxy_members(files, "gomod/")}
    base = "gomod/github.com/!azure/go-ansiterm/@v/"
    assert members[base + "list"] == b"v0.2.0\nv0.10.0\n"  # semver order, not text order
    assert json.loads(members[base + "v0.10.0.info"]) == {"Version": "v0.10.0"}
    assert members[base + "v0.10.0.zip"] == mod and members[base + "v0.2.0.mod"] == mod
    assert base + "v0.2.0.zip" not in members
    assert gomodules.escape("v1.0.0-RC1") == "v1.0.0-!r!c1"


def test_zip_names_without_the_utf8_flag_are_read_as_go_reads_them(tmp_path: Path) -> None:
    # Python decodes such names as cp437; Go takes the bytes. A UTF-8 name must hash alike.
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as out:
        out.writestr("example.com/oracle@v1.0.0/caf\u00e9.txt", b"x")
    with_flag = tmp_path / "flag.zip"
    with_flag.write_bytes(raw.getvalue())
    without = tmp_path / "noflag.zip"
    data = bytearray(raw.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + offset] &= ~0x08  # the UTF-8 flag is bit 11 of the 16-bit flags word
        data[at + offset + 1] &= ~0x08
    without.write_bytes(bytes(data))
    assert gomodules.hash_zip(with_flag, "example.com/oracle", "v1.0.0") == gomodules.hash_zip(
        without, "example.com/oracle", "v1.0.0"
    )


def test_external_imports_are_what_the_dependency_layer_compiles() -> None:
    sources = [
        ("go.mod", b"module example.com/me/v2\n"),
        (
            "cmd/main.go",
            b'package main\n\nimport (\n\t"fmt"\n\tklog "k8s.io/klog/v2"\n\t_ "example.com/me/v2/pkg/a"\n'
            b'\t// "commented.example/out"\n\t"github.com/osrg/gobgp/v3/api" // trailing\n)\n',
        ),
        ("pkg/a/a.go", b'package a\n/* import "block.example/out" */\nimport "golang.org/x/sys/unix"\n'),
        ("pkg/a/a_windows.go", b'package a\nimport "golang.org/x/sys/windows"\n'),  # go list filters it
        ("pkg/a/a_test.go", b'package a\nimport "github.com/stretchr/testify/assert"\n'),
        ("vendor/x.example/y/y.go", b'package y\nimport "vendored.example/z"\n'),
        ("pkg/testdata/t.go", b'package t\nimport "testdata.example/z"\n'),
    ]
    assert gomodules.go_mod_module(sources[0][1].decode()) == "example.com/me/v2"
    assert gomodules.external_imports(sources, "example.com/me/v2") == [
        "github.com/osrg/gobgp/v3/api",
        "golang.org/x/sys/unix",
        "golang.org/x/sys/windows",
        "k8s.io/klog/v2",
    ]
