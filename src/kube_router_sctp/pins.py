"""The pinned data, typed: releases, release lines, families, Go toolchains, vendor restores,
ipvsadm releases and labels.

They come from ``resources/defaults.toml``, ``ipvsadm/ipvsadm.hash`` and the user config
file, merged into one tree (config.py) and checked here by one schema: every value that
reaches a Dockerfile, a shell, a path or a URL has a grammar (validate.py), whichever layer
set it, and cross-references (a line's Go toolchain, an ipvsadm file's version) are checked
at load time rather than when a stage trips over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import schema, validate
from .goproxy import Restoration
from .schema import Field

FAMILIES = ("alpine", "debian")
LAYOUTS = ("gopath", "vendor", "modules")
GO_KINDS = ("apt", "toolchain", "image")


@dataclass(frozen=True)
class Release:
    commit: str
    date: int  # committer date of the pinned commit: the default SOURCE_DATE_EPOCH
    tree_sha256: str


@dataclass(frozen=True)
class GoSpec:
    kind: str  # "apt" | "toolchain" | "image"
    value: str  # package name, toolchain version or image reference
    sha256: str | None = None  # toolchain zip (linux-amd64), linked from [go.toolchains]

    def describe(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Gobgp:
    directory: str | None  # build from this directory of the tree (GOPATH lines)
    package: str | None  # or build this module package ...
    version: str | None  # ... at this version ("go.mod": the one kube-router requires)

    @property
    def command(self) -> str:
        """The package's directory inside its module (gobgp keeps its commands in cmd/)."""
        if self.package is None:
            return ""
        _, sep, rest = self.package.partition("/cmd/")
        return f"cmd/{rest}" if sep else ""


@dataclass(frozen=True)
class ReleaseLine:
    name: str
    versions: str  # ">=0.3.0, <1.1.0"
    layout: str
    version_package: str
    version_vars: tuple[str, ...]
    gobgp: Gobgp
    go: Mapping[str, GoSpec]  # base family -> where Go comes from


@dataclass(frozen=True)
class Family:
    runtime: str
    ipvsadm_builder: str
    builder: str | None
    suite: str
    tag_suffix: str


@dataclass(frozen=True)
class IpvsadmFile:
    name: str
    sha256: str
    debian_orig: bool


@dataclass(frozen=True)
class IpvsadmRelease:
    files: tuple[IpvsadmFile, ...]


@dataclass(frozen=True)
class KubeRouter:
    archive_url: str
    vendor_restore: tuple[Restoration, ...]
    lines: tuple[ReleaseLine, ...]
    releases: Mapping[str, Release]


@dataclass(frozen=True)
class Go:
    toolchains: Mapping[str, Mapping[str, str]]  # version -> platform -> zip sha256


@dataclass(frozen=True)
class Ipvsadm:
    releases: Mapping[str, IpvsadmRelease]


@dataclass(frozen=True)
class Pins:
    kube_router: KubeRouter
    families: Mapping[str, Family]
    go: Go
    ipvsadm: Ipvsadm

    @property
    def releases(self) -> Mapping[str, Release]:
        return self.kube_router.releases

    @property
    def lines(self) -> tuple[ReleaseLine, ...]:
        return self.kube_router.lines

    def pinned_files(self) -> dict[str, str]:
        """sha256 -> what it is, for every pinned file (``fetch --import``)."""
        known = {}
        for version, release in self.ipvsadm.releases.items():
            for entry in release.files:
                known[entry.sha256] = f"ipvsadm {version} {entry.name}"
        for version, platforms in self.go.toolchains.items():
            for platform, sha in platforms.items():
                known[sha] = f"go {version} {platform}"
        for rule in self.kube_router.vendor_restore:
            known[rule.zip_sha256] = f"{rule.module}@{rule.version}"
        return known


def _text(grammar: object, field: str) -> schema.Text[str]:
    """A string kind from a ``validate`` function taking (value, field)."""
    return schema.Text(lambda value: grammar(value, field))  # type: ignore[operator]


def _go_source(value: str) -> GoSpec:
    kind, _, rest = value.partition(":")
    if kind == "apt":
        return GoSpec(kind, validate.package(rest, "Go package (apt:PACKAGE)"))
    if kind == "toolchain":
        return GoSpec(kind, validate.go_version(rest))
    if kind == "image":
        return GoSpec(kind, validate.image_reference(rest, "Go builder image (image:REF)"))
    raise validate._refuse("Go source", value, "apt:PACKAGE, toolchain:VERSION or image:REFERENCE")


def _gobgp_version(value: str) -> str:
    return value if value == "go.mod" else validate.go_module_version(value, "gobgp version")


IMAGE = _text(validate.image_reference, "image reference")
SHA256 = _text(validate.sha256, "sha256")

RELEASE = schema.Record(
    Release,
    {
        "commit": Field(_text(validate.commit, "commit")),
        "date": Field(schema.Integer(0, 253402300799, "seconds since 1970 (up to the year 9999)")),
        "tree-sha256": Field(_text(validate.sha256, "tree digest")),
    },
)
GOBGP = schema.Record(
    lambda dir, package, version: Gobgp(dir, package, version),
    {
        "dir": Field(_text(validate.tree_path, "gobgp directory"), required=False),
        "package": Field(_text(validate.go_import_path, "gobgp package"), required=False),
        "version": Field(schema.Text(_gobgp_version), required=False),
    },
)
LINE = schema.Record(
    ReleaseLine,
    {
        "name": Field(_text(validate.name, "release line name")),
        "versions": Field(schema.Text(validate.version_ranges)),
        "layout": Field(schema.Choice(LAYOUTS, "layout")),
        "version-package": Field(_text(validate.go_import_path, "version package")),
        "version-vars": Field(schema.Array(schema.Text(validate.go_identifier), low=2, high=2)),
        "gobgp": Field(GOBGP),
        "go": Field(schema.Map(schema.Choice(FAMILIES, "base family"), schema.Text(_go_source))),
    },
)


class _RestoreRule(schema.Record[Restoration]):
    """A vendor-restore rule: its file is read from the module's zip at the path below
    ``vendor/<module>/``, so the path must lie there (else there is no file to read)."""

    def check(self, value: object, at: schema.At) -> Restoration:
        rule = super().check(value, at)
        if not rule.path.startswith(f"vendor/{rule.module}/"):
            raise at.child("path").refuse(
                f"{rule.path!r} is not a file below vendor/{rule.module}/",
                'write path = "vendor/<module>/<file>" for the module the rule names',
            )
        return rule


RESTORE = _RestoreRule(
    Restoration,
    {
        "path": Field(_text(validate.tree_path, "vendor-restore path")),
        "module": Field(_text(validate.go_import_path, "Go module")),
        "version": Field(_text(validate.go_module_version, "Go module version")),
        "zip-sha256": Field(SHA256),
    },
)
FAMILY = schema.Record(
    Family,
    {
        "runtime": Field(IMAGE),
        "ipvsadm-builder": Field(IMAGE),
        "builder": Field(IMAGE, required=False),
        "suite": Field(schema.Text(validate.debian_suite), required=False, default="bookworm"),
        "tag-suffix": Field(schema.Text(validate.tag_suffix), required=False, default=""),
    },
)
IPVSADM_FILE = schema.Record(
    IpvsadmFile,
    {
        "name": Field(_text(validate.file_name, "ipvsadm file name")),
        "sha256": Field(SHA256),
        "debian-orig": Field(schema.Flag(), required=False, default=False),
    },
)
SECTIONS: dict[str, schema.Kind[Any]] = {
    "kube-router": schema.Record(
        KubeRouter,
        {
            "archive-url": Field(schema.Text(lambda v: validate.url_template(v, "kube-router archive URL", ("tag",)))),
            "vendor-restore": Field(schema.Array(RESTORE), required=False, default=()),
            "lines": Field(schema.Array(LINE, low=1)),
            "releases": Field(
                schema.Map(schema.Text(validate.kube_router_version), RELEASE, "release"), required=False, default={}
            ),
        },
    ),
    "families": schema.Map(schema.Choice(FAMILIES, "base family"), FAMILY, "family"),
    "go": schema.Record(
        Go,
        {
            "toolchains": Field(
                schema.Map(schema.Text(validate.go_version), schema.Map(schema.Text(validate.go_arch), SHA256)),
                required=False,
                default={},
            )
        },
    ),
    "ipvsadm": schema.Record(
        Ipvsadm,
        {
            "releases": Field(
                schema.Map(
                    schema.Text(validate.ipvsadm_version),
                    schema.Record(IpvsadmRelease, {"files": Field(schema.Array(IPVSADM_FILE, low=1))}),
                    "release",
                ),
                required=False,
                default={},
            )
        },
    ),
}


def check(layers: schema.Layers) -> Pins:
    """The pins of the merged tree, typed and cross-checked."""
    tree = layers.tree
    values = {}
    for section, kind in SECTIONS.items():
        at = layers.at(section)
        if section not in tree:
            raise at.refuse("missing section", "restore resources/defaults.toml")
        values[section] = kind.check(tree[section], at)
    kube_router: KubeRouter = values["kube-router"]
    go: Go = values["go"]
    lines = tuple(_link_line(line, index, go, layers) for index, line in enumerate(kube_router.lines))
    ipvsadm: Ipvsadm = values["ipvsadm"]
    _check_ipvsadm_names(ipvsadm, layers)
    return Pins(
        replace(kube_router, lines=lines),
        values["families"],
        go,
        ipvsadm,
    )


def _link_line(line: ReleaseLine, index: int, go: Go, layers: schema.Layers) -> ReleaseLine:
    """Each gobgp is built one way; each toolchain a line names is pinned (its sha256 linked in)."""
    at = layers.at("kube-router", "lines", index)
    gobgp = line.gobgp
    if (gobgp.directory is None) == (gobgp.package is None) or (gobgp.package is not None) != (
        gobgp.version is not None
    ):
        raise at.child("gobgp").refuse(
            "names neither a directory nor a package and version (or both)",
            'write gobgp = { dir = "vendor/..." } or { package = "...", version = "go.mod" }',
        )
    if gobgp.package is not None and not gobgp.command:
        raise at.child("gobgp").refuse(
            f"names {gobgp.package}, not a command under cmd/ (gobgp is built from its own module's cmd/)",
            'write package = "github.com/osrg/gobgp/v3/cmd/gobgp"',
        )
    linked = {}
    for family, spec in line.go.items():
        if spec.kind == "toolchain":
            sha = go.toolchains.get(spec.value, {}).get("linux-amd64")
            if sha is None:
                raise (
                    at.child("go")
                    .child(family)
                    .refuse(
                        f"Go toolchain {spec.value} has no pinned sha256 for linux-amd64",
                        f'add [go.toolchains."{spec.value}"] linux-amd64 = "<sha256>" to the config',
                    )
                )
            spec = replace(spec, sha256=sha)
        linked[family] = spec
    return replace(line, go=linked)


def _check_ipvsadm_names(ipvsadm: Ipvsadm, layers: schema.Layers) -> None:
    """ipvsadm's builder unpacks ``ipvsadm-<version>/`` from the file: the name must say that version."""
    from .ipvsadm import version_of

    for version, release in ipvsadm.releases.items():
        for index, entry in enumerate(release.files):
            if version_of(entry.name) != version:
                at = layers.at("ipvsadm", "releases", version, "files", index, "name")
                raise at.refuse(
                    f"{schema.shown(entry.name)} is not a release file of ipvsadm {version}",
                    f"name it ipvsadm-{version}.tar.gz or ipvsadm-{version}.tar.xz",
                )
