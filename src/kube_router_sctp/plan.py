"""The build plan: the resolved settings turned into exactly what to fetch and build.

Every stage receives a Plan; none reads configuration itself. Building a plan needs no
network and no Docker: it only looks things up in the pinned data and the patch index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import semver

from . import ipvsadm as ipvsadm_folder
from . import validate
from .config import Settings
from .errors import ConfigError
from .gitsource import looks_like_git
from .goproxy import Restoration
from .patch import Series, load_index, negative_control, select
from .pins import Gobgp, GoSpec, Release

__all__ = ["GoSpec", "Gobgp", "Line", "Pin", "Plan", "build", "release_tags"]


Pin = Release  # a pinned release: commit, date (the default SOURCE_DATE_EPOCH), tree digest


@dataclass(frozen=True)
class KubeRouterSource:
    kind: str  # "archive" (URL of a tarball) | "tarball" (local file) | "git"
    location: str

    def describe(self) -> str:
        return f"{self.kind} {self.location}"


@dataclass(frozen=True)
class Line:
    """A release line as one family builds it (pins.ReleaseLine with that family's Go)."""

    name: str
    versions: str
    layout: str  # "gopath" | "vendor" | "modules"
    version_package: str
    version_vars: tuple[str, ...]
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
    ipvsadm_knowledge: ipvsadm_folder.Knowledge
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


def _lines(settings: Settings, family: str) -> list[Line]:
    lines = []
    for raw in settings.pins.lines:
        go = raw.go.get(family)
        if go is None:
            raise ConfigError(
                f"release line {raw.name} names no Go for the {family} family", f"add go.{family} to the line"
            )
        lines.append(Line(raw.name, raw.versions, raw.layout, raw.version_package, raw.version_vars, raw.gobgp, go))
    return lines


def _line_for(lines: list[Line], version: str) -> Line:
    parsed = validate.semver_of(version)
    for line in lines:
        if all(parsed.match(c.strip()) for c in line.versions.split(",")):
            return line
    supported = "; ".join(f"{line.name} ({line.versions})" for line in lines)
    raise ConfigError(f"kube-router {version} is not supported", f"supported release lines: {supported}")


def _source(settings: Settings) -> KubeRouterSource:
    raw = settings.kube_router_source
    if raw is None:
        template = settings.pins.kube_router.archive_url
        return KubeRouterSource("archive", validate.url(template.format(tag=settings.kube_router_version)))
    scheme = urlsplit(raw).scheme
    if looks_like_git(raw):
        return KubeRouterSource("git", raw)
    if scheme in ("http", "https", "file"):
        return KubeRouterSource("archive", raw)
    path = Path(raw)  # ~ was expanded (and checked) when the configuration was loaded
    if path.is_file():
        return KubeRouterSource("tarball", str(path.resolve()))
    if path.is_dir():
        raise ConfigError(f"{raw} is a directory but not a git repository", "pass a git repository, a tarball or a URL")
    raise ConfigError(f"kube-router source {raw} does not exist", "pass an existing git repository, tarball or URL")


def _ipvsadm(settings: Settings, known: ipvsadm_folder.Knowledge) -> SourceFile:
    releases = settings.pins.ipvsadm.releases
    version = settings.ipvsadm_version
    release = releases.get(version)
    if release is None:
        pinned = ", ".join(sorted(releases, key=validate.ipvsadm_semver))
        raise ConfigError(
            f"ipvsadm {version} has no pinned checksum",
            f"pinned releases: {pinned} (ipvsadm/ipvsadm.hash; add one under [ipvsadm.releases] in your config)",
        )
    # Prefer a file some configured mirror or the Debian pool can serve: order the
    # candidates so the first file has the most sources.
    best: SourceFile | None = None
    for entry in release.files:
        urls = [f"{m.rstrip('/')}/{entry.name}" for m in settings.mirrors.ipvsadm]
        if entry.debian_orig and settings.mirrors.debian:
            urls.append(f"{settings.mirrors.debian}/{known.debian_pool.format(version=version)}")
        urls += [u.format(file=entry.name, version=version) for u in known.urls]
        candidate = SourceFile(entry.name, entry.sha256, tuple(validate.url(u, "ipvsadm URL") for u in urls))
        if best is None or len(candidate.urls) > len(best.urls):
            best = candidate
    assert best is not None  # the schema requires at least one file per release
    return best


def release_tags(version: str, revision: int, suffix: str, control: bool = False) -> tuple[str, ...]:
    """``v0.3.2`` + revision 1 -> ``v0.3.2-sctp.1`` (semver pre-release ``sctp.1``); a
    negative control is ``v0.3.2-nosctp.1`` so it can never be mistaken for a release."""
    base = validate.semver_of(version)
    tagged = base.replace(prerelease=f"{'nosctp' if control else 'sctp'}.{revision}{suffix}")
    return (validate.tag(f"v{tagged}"),)


def build(settings: Settings) -> Plan:
    version = settings.kube_router_version
    family = settings.base_family
    fam = settings.pins.families.get(family)
    if fam is None:
        raise ConfigError(f"no images are configured for base family {family}", "add [families.NAME] to the config")
    line = _line_for(_lines(settings, family), version)
    series = select(load_index(), version)
    if settings.negative_control:
        series = negative_control(series)

    pin = settings.pins.releases.get(version)

    if line.go.kind == "image":
        builder = line.go.value
    elif fam.builder is None:
        raise ConfigError(
            f"the {family} family has no builder image for release line {line.name} (go {line.go.describe()})",
            f"add builder = IMAGE to [families.{family}]",
        )
    else:
        builder = fam.builder
    runtime = settings.runtime_base or fam.runtime

    if settings.push:
        host, namespace = settings.push
        repository = "/".join(p for p in (host, namespace, settings.image_name) if p)
    else:
        repository = settings.image_name

    known = ipvsadm_folder.knowledge()
    return Plan(
        settings=settings,
        version=version,
        pin=pin,
        source=_source(settings),
        line=line,
        series=series,
        restorations=settings.pins.kube_router.vendor_restore,
        ipvsadm_version=settings.ipvsadm_version,
        ipvsadm=_ipvsadm(settings, known),
        ipvsadm_knowledge=known,
        family=family,
        builder_image=builder,
        ipvsadm_builder_image=fam.ipvsadm_builder,
        runtime_image=runtime,
        image_repository=repository,
        release_tags=release_tags(version, series.revision, fam.tag_suffix, series.control_of is not None),
    )
