"""The options table: every user-settable option, declared once, as a field of Settings.

Each field's :func:`option` names its config key, its kind (type and grammar, schema.py),
its default, and its help. From this one table come the config keys a file may set, the
``KUBE_ROUTER_SCTP_*`` variables, the click flags of the group and every stage
subcommand, the type conversion and validation, the ``config`` listing, and the options
table of docs/configuration.md (``scripts/gendocs.py``). The rest of the code reads the
typed fields of the resolved :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import schema, validate
from .errors import ConfigError
from .pins import FAMILIES, Pins

ENV_PREFIX = "KUBE_ROUTER_SCTP_"
HOST = "host "  # origins of values read from the host when no layer set them
BOOTSTRAP_MODES = ("auto", "always", "never")
# Sections whose variables are named by the option alone (build.push -> PUSH); the others
# carry their section (smoke.host -> SMOKE_HOST).
_PLAIN_SECTIONS = ("build", "paths", "mirrors")


@dataclasses.dataclass(frozen=True)
class Option:
    key: str  # "section.name" ("labels" for the one table option)
    kind: schema.Kind[Any]
    default: object  # a TOML value, or None: unset
    help: str
    metavar: str | None = None
    flag: str | None = ""  # "" = --<name>; None = no flag
    env: str | None = ""  # "" = derived from the key; None = no variable
    unset: str = "(unset)"  # how `config` and the docs show an unset value
    doc: str = ""  # more words for the docs' default column
    invert: bool = False  # the flag turns the option off (--no-smoke)

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    @property
    def flag_name(self) -> str | None:
        return None if self.flag is None else (self.flag or f"--{self.name}")

    @property
    def param(self) -> str | None:
        """click's parameter name of the flag."""
        flag = self.flag_name
        return None if flag is None else flag.lstrip("-").replace("-", "_")

    @property
    def env_name(self) -> str | None:
        if self.env is None:
            return None
        if self.env:
            return self.env
        section, _, name = self.key.partition(".")
        stem = name if section in _PLAIN_SECTIONS else f"{section}_{name}"
        return ENV_PREFIX + stem.upper().replace("-", "_")


def option(key: str, kind: schema.Kind[Any], default: object, help: str, **more: Any) -> Any:
    return dataclasses.field(metadata={"option": Option(key, kind, default, help, **more)})


# --- kinds of the options ------------------------------------------------------------------
def _source(value: str) -> str:
    if "://" in value:
        return validate.url(value, "kube-router source URL", ("http", "https", "file", "git", "ssh"))
    return validate.local_path(validate.safe_text(value, "kube-router source path"), "kube-router source path")


def _existing(must: str, what: str, hint: str) -> schema.Text[Path]:
    def check(value: str) -> Path:
        path = Path(validate.local_path(value, what))
        if not (path.is_file() if must == "file" else path.is_dir()):
            raise ConfigError(f"{what} {value} {'does not exist' if must == 'file' else 'is not a directory'}", hint)
        return path

    return schema.Text(check, "path")


def _is_debian_spec(value: str) -> bool:
    return value == "debian" or value.startswith("debian:")


def _kernel(value: str) -> str:
    """debian, debian:SUITE, debian:VERSION (vm/debian.py checks the grammar), or an
    existing path: a kernel .deb, a directory, or a vmlinuz (with --modules)."""
    if _is_debian_spec(value):
        return validate.debian_kernel(value, "--kernel")
    path = validate.local_path(value, "--kernel")
    if not Path(path).exists():
        raise ConfigError(
            f"--kernel {value} does not exist",
            "pass debian, debian:SUITE (debian:trixie), debian:VERSION, a kernel .deb, a directory or a vmlinuz",
        )
    return path


def _fallback_kernel(value: str) -> str | None:
    if value == "none":
        return None
    if _is_debian_spec(value):
        return validate.debian_kernel(value, "--fallback-kernel")
    bad = ConfigError(
        f"--fallback-kernel {value} is neither 'debian[:SUITE]', 'none' nor an existing linux-image .deb",
        "pass --fallback-kernel debian, debian:SUITE, none, or the path of a kernel package",
    )
    path = validate.local_path(value, "--fallback-kernel")
    if not (path.endswith(".deb") and Path(path).is_file()):
        raise bad
    return path


def _go_proxy(value: str) -> str:
    for entry in re.split(r"[,|]", value):
        if entry not in ("direct", "off"):
            validate.url(entry, "Go module proxy")
    return value


_URL_SCHEMES = ("tcp", "unix", "ssh", "http", "https")


class _Labels(schema.Map[str]):
    def check(self, value: object, at: schema.At) -> dict[str, str]:
        table = super().check(value, at)
        for key, text in table.items():
            try:
                validate.label(key, text)
            except ConfigError as exc:
                raise at.child(key).located(exc) from exc
        return table


@dataclasses.dataclass(frozen=True)
class Mirrors:
    ipvsadm: tuple[str, ...] = option(
        "mirrors.ipvsadm",
        schema.Array(schema.Text(lambda v: validate.url(v, "ipvsadm mirror"), "URL")),
        [],
        "Base URL serving ipvsadm tarballs by file name (repeat).",
        metavar="URL",
        flag="--ipvsadm-mirror",
        env=ENV_PREFIX + "IPVSADM_MIRRORS",
        unset="(none)",
        doc="none",
    )
    debian: str | None = option(
        "mirrors.debian",
        schema.Optional(schema.Text(lambda v: validate.url(v, "Debian mirror", ("http", "https")), "http(s) URL")),
        "",
        "Debian mirror (default: from the host's apt sources).",
        metavar="URL",
        flag="--debian-mirror",
        env=ENV_PREFIX + "DEBIAN_MIRROR",
        unset="(none)",
        doc="the host's apt sources",
    )
    go_proxy: str | None = option(
        "mirrors.go-proxy",
        schema.Optional(schema.Text(_go_proxy, "GOPROXY list of URLs, direct, off")),
        "",
        "Go module proxy (default: $GOPROXY or go env GOPROXY).",
        metavar="URL",
        unset="(Go's default)",
        doc="`$GOPROXY`, else `go env GOPROXY`",
    )
    ca_bundle: Path | None = option(
        "mirrors.ca-bundle",
        schema.Optional(_existing("file", "CA bundle", "point --ca-bundle at a PEM file")),
        "",
        "CA bundle for HTTPS inside builder stages (default: the host's trust store; never in the runtime image).",
        metavar="PEM",
        unset="(the host's trust store)",
        doc="the host's trust store, used only where a builder stage needs HTTPS",
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    # Not options: the pins, and for each option key the layer that set it.
    pins: Pins
    sources: Mapping[str, str]
    mirrors: Mirrors

    kube_router_version: str = option(
        "build.kube-router-version",
        schema.Text(validate.kube_router_version, "release, vX.Y.Z"),
        "v0.3.2",
        "kube-router release, e.g. v0.3.2.",
        metavar="VERSION",
    )
    kube_router_source: str | None = option(
        "build.kube-router-source",
        schema.Optional(schema.Text(_source, "URL or local path")),
        "",
        "URL of a release archive, a local tarball, or a git repository (path or URL).",
        metavar="SOURCE",
        unset="(upstream release archive)",
        doc="the upstream release archive",
    )
    ipvsadm_version: str = option(
        "build.ipvsadm-version",
        schema.Text(validate.ipvsadm_version, "release, 1.N"),
        "1.30",
        "ipvsadm release (one pinned in ipvsadm/ipvsadm.hash or the config).",
        metavar="VERSION",
    )
    base_family: str = option(
        "build.base-family",
        schema.Choice(FAMILIES, "base family"),
        "alpine",
        "Base image family.",
        metavar="alpine|debian",
    )
    runtime_base: str | None = option(
        "build.runtime-base",
        schema.Optional(schema.Text(lambda v: validate.image_reference(v, "runtime base image"), "image reference")),
        "",
        "Runtime base image instead of the family's.",
        metavar="IMAGE",
        unset="(family default)",
        doc="the family's (`alpine:3.10.3`)",
    )
    image_name: str = option(
        "build.image-name",
        schema.Text(validate.image_name, "repository name"),
        "kube-router",
        "Image repository name.",
        metavar="NAME",
    )
    bootstrap_bases: str = option(
        "build.bootstrap-bases",
        schema.Choice(BOOTSTRAP_MODES, "bootstrap-bases mode"),
        "auto",
        "Debootstrap Debian bases: when no registry answers (auto), always, or never.",
        metavar="auto|always|never",
    )
    platforms: tuple[str, ...] = option(
        "build.platforms",
        schema.Array(schema.Text(validate.platform, "os/arch"), low=1, high=8),
        ["linux/amd64"],
        "Target platform(s), e.g. linux/amd64 (repeat).",
        metavar="OS/ARCH",
        flag="--platform",
    )
    push: tuple[str, str] | None = option(
        "build.push",
        schema.Optional(schema.Text(validate.registry_target, "registry[/namespace]")),
        "",
        "Push to this registry (e.g. registry:5000).",
        metavar="REGISTRY[/NAMESPACE]",
        unset="(no push)",
        doc="no push",
    )
    offline: bool = option("build.offline", schema.Flag(), False, "Use the cache only; download nothing.", doc="off")
    negative_control: bool = option(
        "build.negative-control",
        schema.Flag(),
        False,
        "Build without the SCTP patches (only the series' compat patches), to prove they matter.",
        doc="off",
    )
    no_cache: bool = option(
        "build.no-cache", schema.Flag(), False, "Ignore Docker's layer cache (a clean build).", doc="off"
    )
    source_date_epoch: int | None = option(
        "build.source-date-epoch",
        schema.Optional(schema.Integer(0, 253402300799, "seconds since 1970 (up to the year 9999)")),
        "",
        "Image timestamps (default: the pinned commit's date).",
        metavar="SECONDS",
        env="SOURCE_DATE_EPOCH",
        unset="(the pinned commit's date)",
        doc="the pinned commit's date (reproducible builds' standard `SOURCE_DATE_EPOCH`)",
    )
    smoke: bool = option(
        "smoke.enabled",
        schema.Flag(),
        True,
        "Skip the smoke test (says so loudly).",
        flag="--no-smoke",
        env=ENV_PREFIX + "SMOKE",
        invert=True,
        doc="on",
    )
    smoke_host: str | None = option(
        "smoke.host",
        schema.Optional(schema.Text(lambda v: validate.url(v, "smoke host", _URL_SCHEMES), "Docker host URL")),
        "",
        "Docker host whose kernel has IPVS, for the smoke test.",
        metavar="DOCKER_HOST",
        flag="--smoke-host",
        unset="(the building daemon)",
        doc="the building daemon",
    )
    smoke_registry: str | None = option(
        "smoke.registry",
        schema.Optional(schema.Text(lambda v: validate.registry_target(v)[0], "host:port")),
        "",
        "The --push registry's address as the smoke host reaches it (default: the same).",
        metavar="HOST:PORT",
        flag="--smoke-registry",
        unset="(the --push address)",
        doc="the `--push` address",
    )
    # Several: the smoke (and verify) runs once per kernel, one row each.
    smoke_kernels: tuple[str, ...] = option(
        "smoke.kernel",
        schema.Array(schema.Text(_kernel, "debian[:SUITE|:VERSION] or a path"), high=32),
        [],
        "Smoke-test (and verify) by booting this kernel under QEMU; repeat for several kernels.",
        metavar="debian[:SUITE|:VERSION]|DEB|DIR|VMLINUZ",
        unset="(none)",
        doc="none; each kernel is smoked (and verified) in turn: `debian` (the host suite's), "
        "`debian:SUITE`, `debian:VERSION`, a kernel `.deb` of either layout, a directory, or a vmlinuz",
    )
    smoke_modules: Path | None = option(
        "smoke.modules",
        schema.Optional(_existing("dir", "--modules", "pass the kernel's /lib/modules/<version>")),
        "",
        "The --kernel's modules (/lib/modules/<version>).",
        metavar="DIR",
        unset="(none)",
        doc="none",
    )
    smoke_fallback_kernel: str | None = option(
        "smoke.fallback-kernel",
        schema.Optional(schema.Text(_fallback_kernel, "debian, none or a .deb path")),
        "debian",
        "If the building daemon's kernel has no IPVS, smoke under QEMU on this kernel (default debian).",
        metavar="debian[:SUITE]|DEB|none",
        unset="none",
        doc="`debian`: when the building daemon's kernel has no IPVS (or no IPVS SCTP) and neither "
        "`--smoke-host` nor `--kernel` was given, the pipeline smokes on this kernel under QEMU, "
        "loudly; `none` fails instead",
    )
    cache_dir: Path = option(
        "paths.cache-dir",
        schema.Optional(schema.Text(lambda v: Path(validate.local_path(v, "cache directory")), "path")),
        "",
        "Download and source cache directory.",
        metavar="DIR",
        unset="$XDG_CACHE_HOME/kube-router-sctp",
        doc="`$XDG_CACHE_HOME/kube-router-sctp`",
    )
    docker_host: str | None = option(
        "docker.host",
        schema.Optional(schema.Text(lambda v: validate.url(v, "Docker host", _URL_SCHEMES), "Docker host URL")),
        "",
        "Docker daemon that builds (default DOCKER_HOST).",
        metavar="URL",
        flag="--docker-host",
        unset="(DOCKER_HOST or local socket)",
        doc="`DOCKER_HOST` or the local socket",
    )
    labels: Mapping[str, str] = option(
        "labels",
        _Labels(schema.Text(lambda k: validate.label(k, "")[0]), schema.Text(), "label key"),
        {},
        "Extra image label (repeat).",
        metavar="KEY=VALUE",
        flag="--label",
        env=None,
        unset="(none)",
        doc="none",
    )

    def chosen(self, key: str) -> bool:
        """Whether the user set ``key`` (a config file, a variable or a flag), rather than
        the defaults or what the host says (its apt sources, its Go)."""
        origin = self.sources.get(key, schema.DEFAULTS)
        return origin != schema.DEFAULTS and not origin.startswith(HOST)


def _walk(cls: type, attrs: tuple[str, ...] = ()) -> Iterator[tuple[Option, tuple[str, ...]]]:
    for item in dataclasses.fields(cls):
        opt = item.metadata.get("option")
        if opt is not None:
            yield opt, (*attrs, item.name)
        elif item.name == "mirrors":
            yield from _walk(Mirrors, (*attrs, item.name))


_ORDER = ("build", "mirrors", "smoke", "paths", "docker", "labels")
_FOUND = sorted(_walk(Settings), key=lambda item: _ORDER.index(item[0].key.split(".")[0]))
OPTIONS: dict[str, Option] = {opt.key: opt for opt, _ in _FOUND}
ATTRS: dict[str, tuple[str, ...]] = {opt.key: attrs for opt, attrs in _FOUND}
SECTIONS = tuple(dict.fromkeys(key.split(".")[0] for key in OPTIONS))
ENV_NAMES: dict[str, str] = {opt.env_name: key for key, opt in OPTIONS.items() if opt.env_name}
# Variables of this prefix that are not options but are read elsewhere.
OTHER_ENV = (ENV_PREFIX + "CONFIG", ENV_PREFIX + "PROJECT_DIR")


def value_of(settings: Settings, key: str) -> Any:
    value: Any = settings
    for attr in ATTRS[key]:
        value = getattr(value, attr)
    return value


def show(settings: Settings, key: str) -> str:
    """The resolved value of ``key`` as `config` prints it."""
    opt = OPTIONS[key]
    value = value_of(settings, key)
    if key == "build.push" and value is not None:
        return "/".join(part for part in value if part)
    if value is None or value == () or value == {}:
        return opt.unset
    return opt.kind.show(value)


def markdown_table() -> str:
    """The options table of docs/configuration.md."""
    rows = [
        "| config key | variable | flag | type | default |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, opt in OPTIONS.items():
        kind = opt.kind.inner if isinstance(opt.kind, schema.Optional) else opt.kind
        kind_text = kind.expected
        item = kind.item if isinstance(kind, schema.Array) else kind
        if isinstance(item, schema.Text) and item.what:
            kind_text += f" ({item.what})"
        if isinstance(kind, schema.Choice):
            kind_text = " \\| ".join(f"`{v}`" for v in kind.values)
        flag = opt.flag_name
        if flag and opt.metavar:
            flag += " " + opt.metavar.replace("|", "\\|")
        if flag and isinstance(kind, schema.Array | schema.Map):
            flag += " (repeat)"
        env = opt.env_name or "—"
        if isinstance(kind, schema.Flag):
            kind_text += " (variables: 1/0, true/false, yes/no, on/off)"
        elif isinstance(kind, schema.Array) and opt.env_name:
            kind_text += " (variable: comma-separated)"
        default = opt.doc or (f"`{json.dumps(opt.default)}`" if isinstance(opt.default, list) else f"`{opt.default}`")
        key_text = "`[labels]`" if key == "labels" else f"`{key}`"
        rows.append(f"| {key_text} | {'`' + env + '`' if opt.env_name else env} | `{flag}` | {kind_text} | {default} |")
    return "\n".join(rows)
