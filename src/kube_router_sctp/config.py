"""One resolved configuration: defaults < user config < environment < flags.

The defaults file (``resources/defaults.toml``) holds both the user-settable options
(``[build]``, ``[mirrors]``, ``[smoke]``, ``[paths]``) and the pinned data the pipeline
needs (releases, commits, checksums, builder images). A user config file may override
any of it and add pins; unknown keys are errors. Environment variables and flags
override the options only. Everything is validated here, once; the rest of the code
receives typed, checked values.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import validate
from .cache import default_root
from .errors import ConfigError

ENV_PREFIX = "KUBE_ROUTER_SCTP_"
FAMILIES = ("alpine", "debian")
BOOTSTRAP_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Option:
    """A user-settable option: where it lives in TOML, its kind, its variable."""

    key: str  # "section.name"
    kind: str  # "str" | "bool" | "list"
    env_name: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.env_name


OPTIONS: dict[str, Option] = {
    o.key: o
    for o in (
        Option("build.kube-router-version", "str", "KUBE_ROUTER_VERSION"),
        Option("build.kube-router-source", "str", "KUBE_ROUTER_SOURCE"),
        Option("build.ipvsadm-version", "str", "IPVSADM_VERSION"),
        Option("build.base-family", "str", "BASE_FAMILY"),
        Option("build.runtime-base", "str", "RUNTIME_BASE"),
        Option("build.image-name", "str", "IMAGE_NAME"),
        Option("build.bootstrap-bases", "str", "BOOTSTRAP_BASES"),
        Option("build.platforms", "list", "PLATFORMS"),
        Option("build.push", "str", "PUSH"),
        Option("build.offline", "bool", "OFFLINE"),
        Option("build.negative-control", "bool", "NEGATIVE_CONTROL"),
        Option("build.no-cache", "bool", "NO_CACHE"),
        Option("mirrors.ipvsadm", "list", "IPVSADM_MIRRORS"),
        Option("mirrors.debian", "str", "DEBIAN_MIRROR"),
        Option("mirrors.go-proxy", "str", "GO_PROXY"),
        Option("mirrors.ca-bundle", "str", "CA_BUNDLE"),
        Option("smoke.enabled", "bool", "SMOKE"),
        Option("smoke.host", "str", "SMOKE_HOST"),
        Option("smoke.registry", "str", "SMOKE_REGISTRY"),
        Option("smoke.kernel", "str", "SMOKE_KERNEL"),
        Option("smoke.modules", "str", "SMOKE_MODULES"),
        Option("smoke.fallback-kernel", "str", "SMOKE_FALLBACK_KERNEL"),
        Option("paths.cache-dir", "str", "CACHE_DIR"),
        Option("docker.host", "str", "DOCKER_HOST"),
    )
}
# Keys a user config may set besides the options: pins and images it may add or replace.
DATA_SECTIONS = ("kube-router", "ipvsadm", "families", "go", "labels")


@dataclass(frozen=True)
class Mirrors:
    ipvsadm: tuple[str, ...]
    debian: str | None
    go_proxy: str | None
    ca_bundle: Path | None


@dataclass(frozen=True)
class Settings:
    kube_router_version: str
    kube_router_source: str | None
    ipvsadm_version: str
    base_family: str
    runtime_base: str | None
    image_name: str
    bootstrap_bases: str
    platforms: tuple[str, ...]
    push: tuple[str, str] | None  # (registry host, namespace)
    offline: bool
    negative_control: bool  # build without the SCTP patches, to prove they matter
    no_cache: bool  # ignore Docker's layer cache (clean builds, reproducibility checks)
    mirrors: Mirrors
    smoke: bool
    smoke_host: str | None
    smoke_registry: str | None  # the --push registry's address as the smoke host reaches it
    smoke_kernel: str | None  # "debian", a kernel .deb, or a vmlinuz (with smoke_modules)
    smoke_modules: Path | None
    # When the building daemon's kernel has no IPVS (or no IPVS SCTP) and no smoke host or
    # kernel was named: smoke under QEMU on this kernel instead ("debian", a .deb); None: fail.
    smoke_fallback_kernel: str | None
    cache_dir: Path
    docker_host: str | None
    labels: Mapping[str, str]
    data: Mapping[str, Any]  # pinned data: releases, lines, families, toolchains
    sources: Mapping[str, str] = field(default_factory=dict)  # option key -> where it came from


def defaults_text() -> str:
    return resources.files("kube_router_sctp").joinpath("resources/defaults.toml").read_text()


def user_config_path() -> Path:
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kube-router-sctp" / "config.toml"


def _load_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML ({exc})", "fix the file") from exc


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _check_user_keys(user: Mapping[str, Any], origin: str) -> None:
    for section, body in user.items():
        if section in DATA_SECTIONS:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table", "see docs/configuration.md")
        for name in body:
            if f"{section}.{name}" not in OPTIONS:
                known = ", ".join(sorted(OPTIONS))
                raise ConfigError(f"{origin}: unknown option {section}.{name}", f"known options: {known}")


def _env_value(option: Option, raw: str) -> Any:
    if option.kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{option.env}={raw!r} is not a boolean", "use 1/0, true/false, yes/no")
    if option.kind == "list":
        return [part for part in raw.replace(",", " ").split() if part]
    return raw


def _get(tree: Mapping[str, Any], key: str) -> Any:
    section, name = key.split(".", 1)
    return tree.get(section, {}).get(name)


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    section, name = key.split(".", 1)
    tree.setdefault(section, {})[name] = value


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The first Debian archive URL in the host's apt sources (deb822 or one-line format)."""
    candidates = [apt_dir / "sources.list.d" / "debian.sources", apt_dir / "sources.list"]
    candidates += sorted((apt_dir / "sources.list.d").glob("*.sources"))
    candidates += sorted((apt_dir / "sources.list.d").glob("*.list"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            urls = []
            if words[0] == "URIs:":
                urls = words[1:]
            elif words[0] == "deb":
                urls = [w for w in words[1:] if "://" in w][:1]
            for url in urls:
                if url.startswith(("http://", "https://")) and "security" not in url:
                    return url.rstrip("/")
    return None


def host_go_proxy() -> str | None:
    """GOPROXY from the environment, else from ``go env`` when Go is installed."""
    if os.environ.get("GOPROXY"):
        return os.environ["GOPROXY"]
    go = shutil.which("go")
    if not go:
        return None
    try:
        out = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def load(flags: Mapping[str, Any] | None = None, *, user_config: Path | None = None) -> Settings:
    """Resolve and validate the configuration. ``flags`` maps option keys to flag values."""
    tree = _load_toml(defaults_text(), "defaults.toml")
    origin = {key: "defaults" for key in OPTIONS}

    path = user_config or user_config_path()
    if path.is_file():
        user = _load_toml(path.read_text(), str(path))
        _check_user_keys(user, str(path))
        tree = _merge(tree, user)
        for key in OPTIONS:
            if _get(user, key) is not None:
                origin[key] = str(path)

    for key, option in OPTIONS.items():
        raw = os.environ.get(option.env)
        if raw is not None:
            _set(tree, key, _env_value(option, raw))
            origin[key] = option.env

    labels = dict(tree.get("labels", {}))
    for key, value in (flags or {}).items():
        if key == "labels":
            labels.update(value)
            continue
        if key not in OPTIONS:
            raise ConfigError(f"internal: unknown flag key {key}", "report this as a bug")
        if value is not None:
            _set(tree, key, value)
            origin[key] = "flag"

    return _validate(tree, labels, origin)


def _str(tree: Mapping[str, Any], key: str) -> str | None:
    value = _get(tree, key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"option {key} must be a string, not {value!r}", "fix the config")
    return value


def _validate(tree: dict[str, Any], labels: Mapping[str, str], origin: dict[str, str]) -> Settings:
    version = validate.kube_router_version(_str(tree, "build.kube-router-version") or "")
    family = _str(tree, "build.base-family") or ""
    if family not in FAMILIES:
        raise ConfigError(f"unknown base family {family!r}", f"choose one of: {', '.join(FAMILIES)}")
    bootstrap = _str(tree, "build.bootstrap-bases") or "auto"
    if bootstrap not in BOOTSTRAP_MODES:
        raise ConfigError(f"invalid bootstrap-bases {bootstrap!r}", f"choose one of: {', '.join(BOOTSTRAP_MODES)}")
    runtime_base = _str(tree, "build.runtime-base")
    if runtime_base:
        validate.image_reference(runtime_base, "runtime base image")

    source = _str(tree, "build.kube-router-source")
    if source and "://" in source:
        validate.url(source, "kube-router source URL", ("http", "https", "file", "git", "ssh"))
    elif source:
        validate.safe_text(source, "kube-router source path")

    push_raw = _str(tree, "build.push")
    push = validate.registry_target(push_raw) if push_raw else None

    ipvsadm_mirrors = tuple(validate.url(u, "ipvsadm mirror") for u in _get(tree, "mirrors.ipvsadm") or [])
    debian = _str(tree, "mirrors.debian") or host_debian_mirror()
    if debian:
        validate.url(debian, "Debian mirror", ("http", "https"))
    go_proxy = _str(tree, "mirrors.go-proxy") or host_go_proxy()
    if go_proxy:
        for entry in go_proxy.replace("|", ",").split(","):
            if entry not in ("direct", "off"):
                validate.url(entry, "Go module proxy")
    ca_raw = _str(tree, "mirrors.ca-bundle")
    ca_bundle = Path(ca_raw) if ca_raw else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(f"CA bundle {ca_bundle} does not exist", "point --ca-bundle at a PEM file")

    platforms = tuple(validate.platform(p) for p in _get(tree, "build.platforms") or ["linux/amd64"])
    checked_labels = dict(validate.label(k, str(v)) for k, v in labels.items())

    smoke_host = _str(tree, "smoke.host")
    if smoke_host:
        validate.url(smoke_host, "smoke host", ("tcp", "unix", "ssh", "http", "https"))
    smoke_registry_raw = _str(tree, "smoke.registry")
    smoke_registry = validate.registry_target(smoke_registry_raw)[0] if smoke_registry_raw else None
    smoke_kernel = _str(tree, "smoke.kernel")
    if smoke_kernel and smoke_kernel != "debian" and not Path(smoke_kernel).is_file():
        raise ConfigError(f"--kernel {smoke_kernel} does not exist", "pass a vmlinuz, a linux-image .deb, or 'debian'")
    modules_raw = _str(tree, "smoke.modules")
    if modules_raw and not Path(modules_raw).is_dir():
        raise ConfigError(f"--modules {modules_raw} is not a directory", "pass the kernel's /lib/modules/<version>")
    if smoke_kernel and smoke_host:
        raise ConfigError("--kernel and --smoke-host both name where to smoke-test", "choose one of them")
    fallback = _str(tree, "smoke.fallback-kernel")
    if fallback in ("", "none"):
        fallback = None
    elif fallback and fallback != "debian" and not (fallback.endswith(".deb") and Path(fallback).is_file()):
        raise ConfigError(
            f"--fallback-kernel {fallback} is neither 'debian', 'none' nor an existing linux-image .deb",
            "pass --fallback-kernel debian, none, or the path of a kernel package",
        )
    docker_host = _str(tree, "docker.host")
    if docker_host:
        validate.url(docker_host, "Docker host", ("tcp", "unix", "ssh", "http", "https"))

    cache_raw = _str(tree, "paths.cache-dir")
    data = {k: tree[k] for k in DATA_SECTIONS if k in tree}
    return Settings(
        kube_router_version=version,
        kube_router_source=source,
        ipvsadm_version=validate.ipvsadm_version(_str(tree, "build.ipvsadm-version") or ""),
        base_family=family,
        runtime_base=runtime_base,
        image_name=validate.image_name(_str(tree, "build.image-name") or ""),
        bootstrap_bases=bootstrap,
        platforms=platforms,
        push=push,
        offline=bool(_get(tree, "build.offline")),
        negative_control=bool(_get(tree, "build.negative-control")),
        no_cache=bool(_get(tree, "build.no-cache")),
        mirrors=Mirrors(ipvsadm_mirrors, debian, go_proxy, ca_bundle),
        smoke=bool(_get(tree, "smoke.enabled")),
        smoke_host=smoke_host,
        smoke_registry=smoke_registry,
        smoke_kernel=smoke_kernel,
        smoke_modules=Path(modules_raw) if modules_raw else None,
        smoke_fallback_kernel=fallback,
        cache_dir=Path(cache_raw) if cache_raw else default_root(),
        docker_host=docker_host,
        labels=checked_labels,
        data=data,
        sources=origin,
    )
