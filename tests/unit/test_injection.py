"""Injection payloads in every value that reaches the Dockerfile, from a user config file.

Every field that images/Dockerfile.j2 renders (directly or through the plan) gets each
payload; the command line must answer with one ConfigError line naming the key and the
file, exit 2, and print not one line of Dockerfile.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kube_router_sctp.cli import main
from tests.unit.test_schema import toml_value

PAYLOADS = ["$(id)", "`id`", "; id", '"', "'", "\nRUN id", "../", " x"]
DEFAULTS: dict[str, Any] = tomllib.loads(
    resources.files("kube_router_sctp").joinpath("resources/defaults.toml").read_text()
)


def spoil(valid: str, payload: str) -> str:
    return payload + valid if payload == "../" else valid + payload


Tree = dict[str, Any]


def line_field(index: int, *path: str | int) -> Callable[[str], Tree]:
    """A user config whose release lines are the project's with one field spoiled."""

    def make(payload: str) -> Tree:
        lines = copy.deepcopy(DEFAULTS["kube-router"]["lines"])
        node = lines[index]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = spoil(str(node[path[-1]]), payload)
        return {"kube-router": {"lines": lines}}

    return make


def at(valid: str, *path: str) -> Callable[[str], Tree]:
    """A user config setting ``path`` to ``valid`` spoiled by the payload."""

    def make(payload: str) -> Tree:
        tree: Tree = {}
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = spoil(valid, payload)
        return tree

    return make


def release(field: str) -> Callable[[str], Tree]:
    def make(payload: str) -> Tree:
        entry = dict(DEFAULTS["kube-router"]["releases"]["v0.3.2"])
        entry[field] = spoil(str(entry[field]), payload)
        return {"kube-router": {"releases": {"v0.3.2": entry}}}

    return make


def restore(field: str) -> Callable[[str], Tree]:
    def make(payload: str) -> Tree:
        rules = copy.deepcopy(DEFAULTS["kube-router"]["vendor-restore"])
        rules[0][field] = spoil(str(rules[0][field]), payload)
        return {"kube-router": {"vendor-restore": rules}}

    return make


def ipvsadm_file(field: str) -> Callable[[str], Tree]:
    def make(payload: str) -> Tree:
        entry = {
            "name": "ipvsadm-1.30.tar.xz",
            "sha256": "95573d70df473c9f63fc4ac496c044c69e3a6de7ccac119922210c0b44cd7a0c",
        }
        entry[field] = spoil(entry[field], payload)
        return {"ipvsadm": {"releases": {"1.30": {"files": [entry]}}}}

    return make


def keyed(section: tuple[str, ...], valid: str, body: object) -> Callable[[str], Tree]:
    """A table key (a release version, a toolchain version) spoiled."""

    def make(payload: str) -> Tree:
        tree: Tree = {}
        node = tree
        for part in section:
            node = node.setdefault(part, {})
        node[spoil(valid, payload)] = body
        return tree

    return make


SHA = "a" * 64
FIELDS: dict[str, tuple[Callable[[str], Tree], str]] = {
    "families.debian.suite": (at("bookworm", "families", "debian", "suite"), "families.debian.suite"),
    "families.debian.runtime": (at("debian:bookworm-slim", "families", "debian", "runtime"), "families.debian.runtime"),
    "families.debian.builder": (at("debian:bookworm", "families", "debian", "builder"), "families.debian.builder"),
    "families.alpine.ipvsadm-builder": (
        at("alpine:3.10.3", "families", "alpine", "ipvsadm-builder"),
        "families.alpine.ipvsadm-builder",
    ),
    "families.debian.tag-suffix": (at("-debian", "families", "debian", "tag-suffix"), "families.debian.tag-suffix"),
    "lines.name": (line_field(0, "name"), "kube-router.lines[0].name"),
    "lines.versions": (line_field(0, "versions"), "kube-router.lines[0].versions"),
    "lines.layout": (line_field(0, "layout"), "kube-router.lines[0].layout"),
    "lines.version-package": (line_field(0, "version-package"), "kube-router.lines[0].version-package"),
    "lines.version-vars": (line_field(0, "version-vars", 0), "kube-router.lines[0].version-vars[0]"),
    "lines.gobgp.dir": (line_field(0, "gobgp", "dir"), "kube-router.lines[0].gobgp.dir"),
    "lines.gobgp.package": (line_field(1, "gobgp", "package"), "kube-router.lines[1].gobgp.package"),
    "lines.gobgp.version": (line_field(1, "gobgp", "version"), "kube-router.lines[1].gobgp.version"),
    "lines.go.debian": (line_field(0, "go", "debian"), "kube-router.lines[0].go.debian"),
    "lines.go.alpine": (line_field(0, "go", "alpine"), "kube-router.lines[0].go.alpine"),
    "lines.go.toolchain": (line_field(5, "go", "debian"), "kube-router.lines[5].go.debian"),
    "releases.commit": (release("commit"), 'kube-router.releases."v0.3.2".commit'),
    "releases.tree-sha256": (release("tree-sha256"), 'kube-router.releases."v0.3.2".tree-sha256'),
    "releases.key": (
        keyed(("kube-router", "releases"), "v9.9.9", {"commit": "a" * 40, "date": 1, "tree-sha256": SHA}),
        "kube-router.releases",
    ),
    "archive-url": (
        at("https://github.com/cloudnativelabs/kube-router/archive/{tag}.tar.gz", "kube-router", "archive-url"),
        "kube-router.archive-url",
    ),
    "vendor-restore.path": (restore("path"), "kube-router.vendor-restore[0].path"),
    "vendor-restore.module": (restore("module"), "kube-router.vendor-restore[0].module"),
    "vendor-restore.version": (restore("version"), "kube-router.vendor-restore[0].version"),
    "vendor-restore.zip-sha256": (restore("zip-sha256"), "kube-router.vendor-restore[0].zip-sha256"),
    "go.toolchains.key": (keyed(("go", "toolchains"), "1.26.9", {"linux-amd64": SHA}), "go.toolchains"),
    "go.toolchains.platform": (keyed(("go", "toolchains", "1.26.9"), "linux-amd64", SHA), 'go.toolchains."1.26.9"'),
    "go.toolchains.sha256": (at(SHA, "go", "toolchains", "1.26.9", "linux-amd64"), 'go.toolchains."1.26.9".linux-amd64'),  # noqa: E501
    "ipvsadm.file.name": (ipvsadm_file("name"), 'ipvsadm.releases."1.30".files[0].name'),
    "ipvsadm.file.sha256": (ipvsadm_file("sha256"), 'ipvsadm.releases."1.30".files[0].sha256'),
    "ipvsadm.releases.key": (
        keyed(("ipvsadm", "releases"), "1.32", {"files": [{"name": "ipvsadm-1.32.tar.xz", "sha256": SHA}]}),
        "ipvsadm.releases",
    ),
    "labels.key": (keyed(("labels",), "org.example.team", "net"), "labels"),
    "labels.value": (at("net", "labels", "org.example.team"), 'labels."org.example.team"'),
    "build.kube-router-version": (at("v0.3.2", "build", "kube-router-version"), "build.kube-router-version"),
    "build.ipvsadm-version": (at("1.31", "build", "ipvsadm-version"), "build.ipvsadm-version"),
    "build.runtime-base": (at("alpine:3.10.3", "build", "runtime-base"), "build.runtime-base"),
    "build.image-name": (at("kube-router", "build", "image-name"), "build.image-name"),
    "build.push": (at("127.0.0.1:5000/team", "build", "push"), "build.push"),
    "build.platforms": (lambda p: {"build": {"platforms": [spoil("linux/arm64", p)]}}, "build.platforms[0]"),
    "build.kube-router-source": (at("https://example.org/kr.tar.gz", "build", "kube-router-source"), "build.kube-router-source"),  # noqa: E501
    "mirrors.debian": (at("http://deb.example.org/debian", "mirrors", "debian"), "mirrors.debian"),
    "mirrors.go-proxy": (at("https://proxy.example.org", "mirrors", "go-proxy"), "mirrors.go-proxy"),
    "mirrors.ipvsadm": (lambda p: {"mirrors": {"ipvsadm": [spoil("https://m.example.org/", p)]}}, "mirrors.ipvsadm[0]"),
    "smoke.registry": (at("10.0.2.2:5000", "smoke", "registry"), "smoke.registry"),
    "docker.host": (at("tcp://127.0.0.1:2375", "docker", "host"), "docker.host"),
}  # fmt: skip
# Label values are quoted text in LABEL lines, never a shell: spaces, ';' and '/' are fine there,
# quotes, '$', backticks and newlines are not.
HARMLESS = {("labels.value", " x"), ("labels.value", "; id"), ("labels.value", "../")}


def write(path: Path, tree: Tree) -> None:
    text = ""
    for section, body in tree.items():
        text += f"[{json.dumps(section)}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in body.items())
    path.write_text(text)


CASES = [(field, payload) for field in FIELDS for payload in PAYLOADS if (field, payload) not in HARMLESS]


@pytest.mark.parametrize(("field", "payload"), CASES, ids=[f"{f}-{PAYLOADS.index(p)}" for f, p in CASES])
def test_a_payload_in_a_user_config_is_refused_before_rendering(tmp_path: Path, field: str, payload: str) -> None:
    make, key = FIELDS[field]
    config = tmp_path / "config.toml"
    write(config, make(payload))
    family = "debian" if "debian" in field or "toolchain" in field else "alpine"
    result = CliRunner().invoke(
        main,
        ["render", "--base-family", family],
        env={"KUBE_ROUTER_SCTP_CONFIG": str(config), "GOPROXY": "off"},
    )
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == ""  # not one line of Dockerfile
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kube-router-sctp: error:") and " — " in lines[0]
    assert key in lines[0] and str(config) in lines[0], lines[0]


def test_the_unspoiled_configs_render(tmp_path: Path) -> None:
    """The test's own configs are valid without a payload: the payload is what is refused."""
    for field, (make, _) in FIELDS.items():
        config = tmp_path / f"{field}.toml"
        write(config, make(""))
        family = "debian" if "debian" in field or "toolchain" in field else "alpine"
        args = ["render", "--base-family", family]
        if field == "build.kube-router-source":
            continue  # a URL source renders without fetching, but names a host that does not exist
        result = CliRunner().invoke(main, args, env={"KUBE_ROUTER_SCTP_CONFIG": str(config), "GOPROXY": "off"})
        assert result.exit_code == 0, (field, result.stderr)
        assert result.stdout.startswith("# Generated by kube-router-sctp")
