"""The build plan: the resolved settings turned into exactly what to fetch and build.

Every stage receives a Plan; none reads configuration itself. Building a plan needs no
network and no Docker: it only looks things up in the pinned data and the patch index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import semver

from . import validate
from .config import Settings
from .errors import ConfigError
from .gitsource import looks_like_git
from .goproxy import Restoration
from .patch import Series, load_index, negative_control, select


@dataclass(frozen=True)
class Pin:
    commit: str
    tree_sha256: str
    date: int  # committer date of the pinned commit: the default SOURCE_DATE_EPOCH


@dataclass(frozen=True)
class KubeRouterSource:
    kind: str  # "archive" (URL of a tarball) | "tarball" (local file) | "git"
    location: str

    def describe(self) -> str:
        return f"{self.kind} {self.location}"


@dataclass(frozen=True)
class GoSpec:
    kind: str  # "apt" | "toolchain" | "image"
    value: str  # package name, toolchain version or image reference
    sha256: str | None = None  # toolchain zip

    def describe(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Gobgp:
    directory: str | None  # build from this directory of the tree (GOPATH lines)
    package: str | None  # or build this module package ...
    version: str | None  # ... at this version ("go.mod": the one kube-router requires)


@dataclass(frozen=True)
class Line:
    name: str
    versions: str
    layout: str  # "gopath" | "vendor" | "modules"
    version_package: str
    version_vars: tuple[str, str]
    gobgp: Gobgp
    go: GoSpec


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    settings: Settings
    version: str
    pin: Pin | None
    source: KubeRouterSource
    line: Line
    series: Series
    restorations: tuple[Restoration, ...]
    ipvsadm_version: str
    ipvsadm: SourceFile
    family: str
    builder_image: str
    ipvsadm_builder_image: str
    runtime_image: str
    image_repository: str  # where the image is tagged locally and pushed
    release_tags: tuple[str, ...]

    @property
    def tag(self) -> str:
        return self.release_tags[0]

    @property
    def reference(self) -> str:
        return f"{self.image_repository}:{self.tag}"

    @property
    def semver(self) -> semver.Version:
        return validate.semver_of(self.version)


def _lines(data: dict[str, Any], family: str, toolchains: dict[str, Any]) -> list[Line]:
    lines = []
    for raw in data.get("kube-router", {}).get("lines", []):
        go_raw = str(raw.get("go", {}).get(family, ""))
        kind, _, value = go_raw.partition(":")
        if kind not in ("apt", "toolchain", "image") or not value:
            raise ConfigError(
                f"line {raw.get('name')}: bad go.{family} {go_raw!r}",
                "use apt:PKG, toolchain:VER or image:REF",
            )
        sha = None
        if kind == "toolchain":
            sha = toolchains.get(value, {}).get("linux-amd64")
            if not sha:
                raise ConfigError(
                    f"Go toolchain {value} has no pinned sha256", "add it under [go.toolchains] in the config"
                )
            validate.sha256(sha, f"Go toolchain {value} sha256")
        elif kind == "image":
            validate.image_reference(value, "Go builder image")
        else:
            validate.safe_text(value, "Go package")
        gobgp = raw.get("gobgp", {})
        vars_ = tuple(raw.get("version-vars", ["version", "buildDate"]))
        lines.append(
            Line(
                name=str(raw["name"]),
                versions=str(raw["versions"]),
                layout=str(raw["layout"]),
                version_package=validate.safe_text(str(raw["version-package"]), "version package"),
                version_vars=(str(vars_[0]), str(vars_[1])),
                gobgp=Gobgp(gobgp.get("dir"), gobgp.get("package"), gobgp.get("version")),
                go=GoSpec(kind, value, sha),
            )
        )
    return lines


def _line_for(lines: list[Line], version: str) -> Line:
    parsed = validate.semver_of(version)
    for line in lines:
        if all(parsed.match(c.strip()) for c in line.versions.split(",")):
            return line
    supported = "; ".join(f"{line.name} ({line.versions})" for line in lines)
    raise ConfigError(f"kube-router {version} is not supported", f"supported release lines: {supported}")


def _source(settings: Settings, data: dict[str, Any]) -> KubeRouterSource:
    raw = settings.kube_router_source
    if raw is None:
        template = str(data["kube-router"]["archive-url"])
        return KubeRouterSource("archive", validate.url(template.format(tag=settings.kube_router_version)))
    scheme = urlsplit(raw).scheme
    if looks_like_git(raw):
        return KubeRouterSource("git", raw)
    if scheme in ("http", "https", "file"):
        return KubeRouterSource("archive", raw)
    path = Path(raw).expanduser()
    if path.is_file():
        return KubeRouterSource("tarball", str(path.resolve()))
    if path.is_dir():
        raise ConfigError(f"{raw} is a directory but not a git repository", "pass a git repository, a tarball or a URL")
    raise ConfigError(f"kube-router source {raw} does not exist", "pass an existing git repository, tarball or URL")


def _ipvsadm(settings: Settings, data: dict[str, Any]) -> SourceFile:
    section = data.get("ipvsadm", {})
    releases = section.get("releases", {})
    release = releases.get(settings.ipvsadm_version)
    if release is None:
        known = ", ".join(sorted(releases, key=validate.ipvsadm_semver))
        raise ConfigError(f"ipvsadm {settings.ipvsadm_version} has no pinned checksum", f"pinned releases: {known}")
    files = release.get("files", [])
    # Prefer a file some configured mirror or the Debian pool can serve: order the
    # candidates so the first file has the most sources.
    best: SourceFile | None = None
    for entry in files:
        name = validate.safe_text(str(entry["name"]), "ipvsadm file name")
        sha = validate.sha256(str(entry["sha256"]), f"{name} sha256")
        urls = [f"{m.rstrip('/')}/{name}" for m in settings.mirrors.ipvsadm]
        if entry.get("debian-orig") and settings.mirrors.debian:
            pool = str(section["debian-pool"]).format(version=settings.ipvsadm_version)
            urls.append(f"{settings.mirrors.debian}/{pool}")
        urls += [str(u).format(file=name, version=settings.ipvsadm_version) for u in section.get("urls", [])]
        candidate = SourceFile(name, sha, tuple(validate.url(u, "ipvsadm URL") for u in urls))
        if best is None or len(candidate.urls) > len(best.urls):
            best = candidate
    if best is None:
        raise ConfigError(f"ipvsadm {settings.ipvsadm_version} lists no files", "fix [ipvsadm.releases] in the config")
    return best


def release_tags(version: str, revision: int, suffix: str, control: bool = False) -> tuple[str, ...]:
    """``v0.3.2`` + revision 1 -> ``v0.3.2-sctp.1`` (semver pre-release ``sctp.1``); a
    negative control is ``v0.3.2-nosctp.1`` so it can never be mistaken for a release."""
    base = validate.semver_of(version)
    tagged = base.replace(prerelease=f"{'nosctp' if control else 'sctp'}.{revision}{suffix}")
    return (validate.tag(f"v{tagged}"),)


def build(settings: Settings) -> Plan:
    data = dict(settings.data)
    version = settings.kube_router_version
    family = settings.base_family
    families = data.get("families", {})
    fam = families.get(family)
    if fam is None:
        raise ConfigError(f"no images are configured for base family {family}", "add [families.NAME] to the config")
    lines = _lines(data, family, data.get("go", {}).get("toolchains", {}))
    line = _line_for(lines, version)
    series = select(load_index(), version)
    if settings.negative_control:
        series = negative_control(series)

    pins = data.get("kube-router", {}).get("releases", {})
    pin = None
    if version in pins:
        entry = pins[version]
        tree = str(entry.get("tree-sha256", ""))
        pin = Pin(
            validate.commit(str(entry["commit"]), f"{version} commit"),
            validate.sha256(tree, f"{version} tree-sha256") if tree else "",
            int(entry.get("date", 0)),
        )

    restorations = tuple(
        Restoration(str(r["path"]), str(r["module"]), str(r["version"]), validate.sha256(str(r["zip-sha256"])))
        for r in data.get("kube-router", {}).get("vendor-restore", [])
    )

    if line.go.kind == "image":
        builder = line.go.value
    else:
        builder = validate.image_reference(str(fam.get("builder", "")), f"{family} builder image")
    runtime = settings.runtime_base or validate.image_reference(str(fam["runtime"]), f"{family} runtime image")
    ipvsadm_builder = validate.image_reference(str(fam["ipvsadm-builder"]), f"{family} ipvsadm builder image")

    if settings.push:
        host, namespace = settings.push
        repository = "/".join(p for p in (host, namespace, settings.image_name) if p)
    else:
        repository = settings.image_name
    suffix = validate.safe_text(str(fam.get("tag-suffix", "")), "tag suffix")

    return Plan(
        settings=settings,
        version=version,
        pin=pin,
        source=_source(settings, data),
        line=line,
        series=series,
        restorations=restorations,
        ipvsadm_version=settings.ipvsadm_version,
        ipvsadm=_ipvsadm(settings, data),
        family=family,
        builder_image=builder,
        ipvsadm_builder_image=ipvsadm_builder,
        runtime_image=runtime,
        image_repository=repository,
        release_tags=release_tags(version, series.revision, suffix, series.control_of is not None),
    )
