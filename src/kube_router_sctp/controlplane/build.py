"""kube-apiserver and kube-controller-manager, built by the project from pinned modules.

The pin is data: ``resources/controlplane/go.mod`` and ``go.sum`` (a scratch module that
requires k8s.io/kubernetes, names the two commands as its tools and replaces each staging
module with the release's published one) and ``build.toml`` (versions, build date, Go).
The build runs ``go build -mod=readonly`` in a throw-away container of a Debian builder
image, with a pinned Go toolchain from the module proxy and every module checked against
go.sum. Where the modules come from is a ``ModuleSource``: today the configured Go module
proxy (with the host's CA bundle handed in for that one run, never kept in an image).

The binaries are cached by content: blobs under their sha256, and a record under the key
of everything that went into them (go.mod, go.sum, build.toml, toolchain, flags, script).
A second run finds the record, re-checks each blob and costs seconds; the first costs
about ten minutes of compile on two idle cores (51 minutes measured on a loaded machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO

from .. import bases, config, goproxy, log
from ..archive import BoundedTarInfo
from ..cache import Cache, remove_tree
from ..config import Settings
from ..download import Downloader
from ..engine import Engine
from ..errors import ConfigError, DataplaneError, FetchError

RESOURCES = "resources/controlplane"
# The Go module cache of these builds, kept between runs (modules are go.sum-verified on use).
MODULE_VOLUME = "kube-router-sctp-controlplane-gomod"
# Go's build cache, kept until a build succeeds: a build interrupted (Ctrl-C, a time-out on
# a loaded machine) resumes where it stopped instead of compiling 2,400 packages again.
BUILD_CACHE_SUFFIX = "-gocache"
BUILD_TIMEOUT = 4 * 3600
VERSION_PACKAGE = "k8s.io/component-base/version"
MAX_BINARY = 1 << 30
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_GO = re.compile(r"^1\.\d+(\.\d+)?$")
_COMMAND = re.compile(r"^[a-z][a-z0-9-]*$")

_BUILD_SCRIPT = """set -eu
cd /src
go version
go build -trimpath -ldflags "$KRS_LDFLAGS" -o /out/ $KRS_PACKAGES
ls -l /out
"""


@dataclass(frozen=True)
class Pin:
    """The pinned control plane: what build.toml, go.mod and go.sum say."""

    kubernetes: str
    staging: str
    build_date: str
    go: str
    commands: tuple[str, ...]
    go_mod: bytes
    go_sum: bytes
    build_toml: bytes

    @property
    def packages(self) -> list[str]:
        return [f"k8s.io/kubernetes/cmd/{command}" for command in self.commands]

    def ldflags(self) -> str:
        """``-s -w`` and the version variables, so /version names the release."""
        major, minor, _ = _VERSION.match(self.kubernetes).groups()  # type: ignore[union-attr]
        values = {
            "gitVersion": self.kubernetes,
            "gitMajor": major,
            "gitMinor": minor,
            "gitTreeState": "clean",  # the release's module, as published
            "buildDate": self.build_date,
        }
        return " ".join(["-s", "-w", "-buildid="] + [f"-X {VERSION_PACKAGE}.{k}={v}" for k, v in values.items()])


def _resource(name: str) -> bytes:
    return resources.files("kube_router_sctp").joinpath(f"{RESOURCES}/{name}").read_bytes()


def load_pin() -> Pin:
    raw = _resource("build.toml")
    data = tomllib.loads(raw.decode())
    pin = Pin(
        kubernetes=str(data.get("kubernetes", "")),
        staging=str(data.get("staging", "")),
        build_date=str(data.get("build-date", "")),
        go=str(data.get("go", "")),
        commands=tuple(str(c) for c in data.get("commands", ())),
        go_mod=_resource("go.mod"),
        go_sum=_resource("go.sum"),
        build_toml=raw,
    )
    problems = []
    if not (_VERSION.match(pin.kubernetes) and _VERSION.match(pin.staging)):
        problems.append(f"kubernetes {pin.kubernetes!r} / staging {pin.staging!r} are not vX.Y.Z")
    if not _DATE.match(pin.build_date):
        problems.append(f"build-date {pin.build_date!r} is not YYYY-MM-DDTHH:MM:SSZ")
    if not _GO.match(pin.go):
        problems.append(f"go {pin.go!r} is not a Go version")
    if not pin.commands or not all(_COMMAND.match(c) for c in pin.commands):
        problems.append(f"commands {pin.commands!r} are not command names")
    if f"k8s.io/kubernetes {pin.kubernetes}".encode() not in pin.go_mod:
        problems.append(f"go.mod does not require k8s.io/kubernetes {pin.kubernetes}")
    if problems:
        raise ConfigError(f"the control plane's pin ({RESOURCES}) is broken: {'; '.join(problems)}", "regenerate it")
    return pin


# -- where modules come from --------------------------------------------------------------
@dataclass(frozen=True)
class ModuleSource:
    """How the build container's ``go`` gets modules: its environment and the files it
    needs (put in for the one run: a CA bundle, or a whole file-based module proxy as
    (path, bytes or a file in the cache)). go.sum verifies whatever arrives."""

    description: str
    environment: Mapping[str, str]
    files: tuple[tuple[str, bytes | Path], ...] = ()


_CA_IN_CONTAINER = "/etc/ssl/certs/ca-certificates.crt"


def proxy_source(settings: Settings) -> ModuleSource:
    """The configured Go module proxy (``off`` with --offline: the module volume only).
    HTTPS through a local CA needs its bundle: the configured one, else the host's."""
    if settings.offline:
        return ModuleSource("the module cache only (--offline)", {"GOPROXY": "off"})
    environment = {"GOPROXY": settings.mirrors.go_proxy} if settings.mirrors.go_proxy else {}
    bundle = settings.mirrors.ca_bundle or config.host_ca_bundle()
    files: tuple[tuple[str, bytes | Path], ...] = ()
    if bundle is not None:
        files = ((_CA_IN_CONTAINER, bundle.read_bytes()),)
        environment = {**environment, "SSL_CERT_FILE": _CA_IN_CONTAINER}
    where = settings.mirrors.go_proxy or "Go's default proxy"
    return ModuleSource(f"{where}" + (f" (CA bundle {bundle})" if bundle else ""), environment, files)


# -- the binaries ------------------------------------------------------------------------
@dataclass(frozen=True)
class Binaries:
    version: str
    paths: Mapping[str, Path]  # command -> executable (a cache blob)

    def __getitem__(self, command: str) -> Path:
        return self.paths[command]


def build_key(pin: Pin, toolchain_sha256: str, arch: str) -> str:
    parts = {
        "go.mod": hashlib.sha256(pin.go_mod).hexdigest(),
        "go.sum": hashlib.sha256(pin.go_sum).hexdigest(),
        "build.toml": hashlib.sha256(pin.build_toml).hexdigest(),
        "toolchain": toolchain_sha256,
        "ldflags": pin.ldflags(),
        "script": _BUILD_SCRIPT,
        "arch": arch,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _record_path(cache: Cache, key: str) -> Path:
    directory = cache.root / "records" / "controlplane"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{key}.json"


def _arch() -> str:
    machine = platform.machine()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise ConfigError(f"no control-plane build for this machine ({machine})", "run verify on amd64 or arm64")
    return arch


def _toolchain_sha(settings: Settings, go: str, arch: str) -> str:
    """The pinned sha256 of Go ``go``'s toolchain zip (defaults.toml [go.toolchains])."""
    pinned = settings.pins.go.toolchains.get(go, {}).get(f"linux-{arch}")
    if not pinned:
        raise ConfigError(
            f"the control plane needs Go {go} for linux-{arch}, which [go.toolchains] does not pin",
            f'add [go.toolchains."{go}"] linux-{arch} = "<sha256 of the toolchain zip>" to the config',
        )
    return str(pinned)


def cached(settings: Settings, cache: Cache | None = None) -> Binaries | None:
    """The binaries of the current pin if the cache holds them (checked), else None."""
    pin = load_pin()
    arch = _arch()
    cache = cache or Cache(settings.cache_dir)
    key = build_key(pin, _toolchain_sha(settings, pin.go, arch), arch)
    return _from_record(cache, key, pin)


def _from_record(cache: Cache, key: str, pin: Pin) -> Binaries | None:
    path = _record_path(cache, key)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        shas = {command: str(record["binaries"][command]["sha256"]) for command in pin.commands}
    except (ValueError, KeyError, TypeError):
        log.warn(f"control-plane record {path} is damaged; building again")
        path.unlink(missing_ok=True)
        return None
    for sha in shas.values():
        if not cache.has_blob(sha):  # a damaged blob is removed here
            path.unlink(missing_ok=True)
            return None
    return _executables(cache, pin, shas)


def _executables(cache: Cache, pin: Pin, shas: Mapping[str, str]) -> Binaries:
    paths = {command: cache.blob_path(sha) for command, sha in shas.items()}
    for blob in paths.values():
        blob.chmod(0o555)
    return Binaries(pin.kubernetes, paths)


def binaries(
    settings: Settings,
    engine: Engine | None = None,
    source: ModuleSource | None = None,
    module_volume: str = MODULE_VOLUME,
) -> Binaries:
    """kube-apiserver and kube-controller-manager of the pin: from the cache, or built."""
    pin = load_pin()
    arch = _arch()
    cache = Cache(settings.cache_dir)
    toolchain_sha = _toolchain_sha(settings, pin.go, arch)
    key = build_key(pin, toolchain_sha, arch)
    with cache.lock(f"controlplane-{key}"):
        found = _from_record(cache, key, pin)
        if found is not None:
            log.info(f"control plane {pin.kubernetes}: cached ({key[:12]})")
            return found
        start = time.monotonic()
        with log.step(
            "control plane",
            f"building {', '.join(pin.commands)} {pin.kubernetes} with Go {pin.go} "
            "(10 minutes or more on 2 cores, once)",
        ):
            engine = engine or Engine(settings.docker_host)
            go = _Go(settings, engine, source or proxy_source(settings), pin.go, arch, module_volume)
            with go.run(
                _BUILD_SCRIPT,
                {"src/go.mod": pin.go_mod, "src/go.sum": pin.go_sum},
                {"KRS_LDFLAGS": pin.ldflags(), "KRS_PACKAGES": " ".join(pin.packages)},
                "/out",
            ) as out:
                shas = _store(cache, out, pin.commands)
            # The binaries are what is kept; the compile cache (gigabytes) is not needed now.
            engine.remove_volume(go.build_cache)
        seconds = time.monotonic() - start
        record = {
            "kubernetes": pin.kubernetes,
            "go": pin.go,
            "arch": arch,
            "ldflags": pin.ldflags(),
            "build_seconds": round(seconds, 1),
            "binaries": {command: {"sha256": sha} for command, sha in shas.items()},
        }
        target = _record_path(cache, key)
        part = target.with_suffix(".part")
        part.write_text(json.dumps(record, indent=2) + "\n")
        part.replace(target)
        log.info(f"control plane {pin.kubernetes} built in {seconds:.0f}s ({key[:12]})")
        return _executables(cache, pin, shas)  # _store hashed each blob as it wrote it


# -- a new pin (maintainers: python -m kube_router_sctp.controlplane pin VERSION) ------------
_RELEASE_SCRIPT = """set -eu
mkdir -p /out
go list -m -json "k8s.io/kubernetes@$KRS_VERSION" > /out/release.json
cp "$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$KRS_VERSION.mod" /out/kubernetes.mod
"""
_TIDY_SCRIPT = """set -eu
cd /src
go mod tidy
"""
_STAGING = re.compile(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", re.M)


def pin(version: str, settings: Settings, go: str | None = None, engine: Engine | None = None) -> Pin:
    """Write a new pin for k8s.io/kubernetes ``version`` into the package's resources:
    build.toml, and go.mod and go.sum made by ``go mod tidy`` of a scratch module that
    requires the release, names the commands as tools, and replaces every staging module
    (``=> ./staging/...`` in the release's go.mod) with the same module at v0.MINOR.PATCH."""
    match = _VERSION.match(version)
    if not match:
        raise ConfigError(f"{version!r} is not a Kubernetes release (vX.Y.Z)", "name one, e.g. v1.37.2")
    current = load_pin()
    go = go or current.go
    engine = engine or Engine(settings.docker_host)
    runner = _Go(settings, engine, proxy_source(settings), go, _arch())
    with runner.run(_RELEASE_SCRIPT, {}, {"GOFLAGS": "-mod=mod", "KRS_VERSION": version}, "/out") as out:
        found = _read_out(out, ("release.json", "kubernetes.mod"))
    release = json.loads(found["release.json"])
    needs = str(release.get("GoVersion", "1.0"))
    if _go_tuple(go) < _go_tuple(needs):
        raise ConfigError(f"k8s.io/kubernetes {version} needs Go {needs}, not {go}", "pin a newer toolchain; pass --go")
    staging = f"v0.{match[2]}.{match[3]}"
    modules = sorted(set(_STAGING.findall(found["kubernetes.mod"].decode())))
    go_mod = "\n".join(
        [
            "module kube-router-sctp.invalid/controlplane",
            "",
            f"go {needs}",
            "",
            "tool (",
            *(f"\tk8s.io/kubernetes/cmd/{command}" for command in current.commands),
            ")",
            "",
            f"require k8s.io/kubernetes {version}",
            "",
            "replace (",
            *(f"\t{module} => {module} {staging}" for module in modules),
            ")",
            "",
        ]
    )
    with runner.run(_TIDY_SCRIPT, {"src/go.mod": go_mod.encode()}, {"GOFLAGS": "-mod=mod"}, "/src") as out:
        tidied = _read_out(out, ("go.mod", "go.sum"), prefix="src")
    build_date = str(release.get("Time", ""))
    text = _resource("build.toml").decode()
    for key, value in (("kubernetes", version), ("staging", staging), ("build-date", build_date), ("go", go)):
        text = re.sub(rf'^{key} = "[^"]*"', f'{key} = "{value}"', text, flags=re.M)
    target = Path(str(resources.files("kube_router_sctp").joinpath(RESOURCES)))
    (target / "go.mod").write_bytes(tidied["go.mod"])
    (target / "go.sum").write_bytes(tidied["go.sum"])
    (target / "build.toml").write_text(text)
    return load_pin()


def _go_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _read_out(archive: Path, names: tuple[str, ...], prefix: str = "out") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, tarinfo=BoundedTarInfo) as tar:
            for member in tar:
                name = member.name.removeprefix(f"{prefix}/")
                if name in names and member.isreg() and member.size < (64 << 20):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[name] = handle.read()
    except tarfile.TarError as exc:
        raise DataplaneError(f"go's output cannot be read ({exc})", "run again") from exc
    missing = sorted(set(names) - set(found))
    if missing:
        raise DataplaneError(f"go left no {', '.join(missing)}", "see its output above")
    return found


class _Go:
    """Go of a pinned toolchain in a throw-away container of a Debian builder image, with
    the module volume mounted and modules from ``source``."""

    def __init__(
        self, settings: Settings, engine: Engine, source: ModuleSource, go: str, arch: str, volume: str = MODULE_VOLUME
    ) -> None:
        self.settings, self.engine, self.source, self.go, self.arch = settings, engine, source, go, arch
        self.volume = volume
        self.build_cache = volume.removesuffix("-gomod") + BUILD_CACHE_SUFFIX
        self.cache = Cache(settings.cache_dir)
        sha = _toolchain_sha(settings, go, arch)
        downloader = Downloader(self.cache, offline=settings.offline)
        self.toolchain = goproxy.toolchain_zip(downloader, settings.mirrors.go_proxy, go, arch, sha).path
        self.image = builder_image(settings, engine)
        log.info(f"Go {go} in {self.image}; modules from {source.description}")

    @contextlib.contextmanager
    def run(
        self, script: str, files: Mapping[str, bytes | Path], environment: Mapping[str, str], out: str
    ) -> Iterator[Path]:
        """Run ``script``; yield the tar of ``out`` as the container left it (removed after)."""
        scratch = self.cache.scratch("controlplane-")
        try:
            inputs = scratch / "inputs.tar"
            extra = {path.lstrip("/"): data for path, data in self.source.files}
            _write_inputs(inputs, _toolchain_members(self.toolchain, self.go, self.arch), {**files, **extra})
            result = self.engine.run(
                self.image,
                [script],
                entrypoint=["/bin/sh", "-c"],
                environment=_go_environment(self.source, environment),
                volumes={self.volume: "/go/pkg/mod", self.build_cache: "/root/.cache/go-build"},
                files=(inputs, "/"),
                collect=(out, scratch / "out.tar"),
                timeout=BUILD_TIMEOUT,
                labels={"io.github.kube-router-sctp.role": "controlplane-build"},
            )
            if result.exit_code != 0:
                raise _build_failure(result.output)
            yield scratch / "out.tar"
        finally:
            remove_tree(scratch)


def _go_environment(source: ModuleSource, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "PATH": "/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "GOPATH": "/go",
        "GOMODCACHE": "/go/pkg/mod",
        "GOCACHE": "/root/.cache/go-build",
        "GOFLAGS": "-mod=readonly -buildvcs=false",
        "GOTOOLCHAIN": "local",
        "GOTELEMETRY": "off",
        "CGO_ENABLED": "0",
        **source.environment,
        **extra,
    }


def _build_failure(output: str) -> Exception:
    refusal = goproxy.REFUSAL.search(output)
    if refusal:
        return FetchError(
            f"the Go module proxy refused {refusal[1]}@{refusal[2]} (HTTP {refusal[3]}) "
            "while building the control plane",
            "point --go-proxy (or GOPROXY) at a module proxy that serves it",
        )
    tail = " / ".join(line.strip() for line in output.strip().splitlines()[-6:])
    return DataplaneError(
        f"building the control plane failed: {tail[-600:]}",
        "see the go output above; with --offline the module volume must already hold every module",
    )


def builder_image(settings: Settings, engine: Engine) -> str:
    """A Debian image to run Go in: the debian family's builder if the daemon has it, else
    the bootstrapped base (made from the Debian mirror if needed)."""
    family = settings.pins.families["debian"]
    suite = family.suite
    candidates = [family.builder or "", bases.bootstrap_reference(suite)]
    for reference in candidates:
        if reference and engine.image(reference) is not None:
            return reference
    if settings.bootstrap_bases == "never":
        raise ConfigError(
            f"no Debian builder image ({', '.join(c for c in candidates if c)}) is on {engine.describe()}",
            "load one with docker load, or allow bootstrapping (--bootstrap-bases auto)",
        )
    reference = bases.bootstrap_reference(suite)
    log.info(f"bootstrapping a Debian {suite} image to build the control plane in")
    bases.bootstrap(engine, suite, settings.mirrors.debian, reference)
    return reference


# -- the container's inputs and outputs ----------------------------------------------------
def _toolchain_members(zip_path: Path, go: str, arch: str) -> Iterator[tuple[str, bytes, int]]:
    """The Go toolchain zip (pinned, verified) as (path under usr/local/go, bytes, mode)."""
    prefix = f"golang.org/toolchain@v0.0.1-go{go}.linux-{arch}/"
    total = 0
    with zipfile.ZipFile(zip_path) as bundle:
        for info in bundle.infolist():
            if info.is_dir():
                continue
            if not info.filename.startswith(prefix):
                raise DataplaneError(
                    f"the Go toolchain zip holds {info.filename!r}, outside {prefix}", "fetch it again"
                )
            rel = PurePosixPath(info.filename[len(prefix) :])
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise DataplaneError(f"the Go toolchain zip holds {info.filename!r}", "fetch it again")
            total += info.file_size
            if total > 4 * MAX_BINARY:
                raise DataplaneError("the Go toolchain zip unpacks to more than 4 GiB", "fetch it again")
            executable = rel.parts[0] == "bin" or rel.parts[:2] == ("pkg", "tool")
            yield f"usr/local/go/{rel}", bundle.read(info), 0o755 if executable else 0o644


def _write_inputs(dest: Path, toolchain: Iterable[tuple[str, bytes, int]], files: Mapping[str, bytes | Path]) -> None:
    seen_dirs: set[str] = set()
    with tarfile.open(dest, "w") as tar:

        def add(name: str, data: bytes | Path, mode: int) -> None:
            parts = PurePosixPath(name).parts
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in seen_dirs:
                    seen_dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.mode = mode
            if isinstance(data, Path):
                info.size = data.stat().st_size
                with data.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        for name, content, mode in toolchain:
            add(name, content, mode)
        for name, item in files.items():
            add(name, item, 0o644)


def _store(cache: Cache, archive: Path, commands: tuple[str, ...]) -> dict[str, str]:
    """Move each command out of the container's /out archive into the cache as a blob;
    nothing else in the archive is read, and nothing is written outside the cache."""
    wanted = {f"out/{command}": command for command in commands}
    shas: dict[str, str] = {}
    try:
        with tarfile.open(archive, tarinfo=BoundedTarInfo) as tar:
            for member in tar:
                command = wanted.get(member.name)
                if command is None:
                    continue
                if not member.isreg() or member.size > MAX_BINARY:
                    raise DataplaneError(f"the build produced {member.name} that is not a plain file", "run again")
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - regular members always have data
                    continue
                shas[command] = _to_blob(cache, handle)
    except tarfile.TarError as exc:
        raise DataplaneError(f"the control-plane build's output cannot be read ({exc})", "run again") from exc
    missing = sorted(set(commands) - set(shas))
    if missing:
        raise DataplaneError(f"the control-plane build produced no {', '.join(missing)}", "see the go output above")
    return shas


def _to_blob(cache: Cache, handle: IO[bytes]) -> str:
    """Stream one binary into the cache under its sha256, through a file of this run's own
    (created exclusively, never through a link), removed whatever happens."""
    fd, name = tempfile.mkstemp(prefix="controlplane-", suffix=".part", dir=cache.tmp_dir())
    part = Path(name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        if not cache.has_blob(sha):
            cache.put_blob(part, sha)
        return sha
    finally:
        part.unlink(missing_ok=True)
