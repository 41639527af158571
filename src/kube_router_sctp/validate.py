"""Validators for every free-form value that can reach a Dockerfile, a URL or a tag.

Each returns the normalised value or raises ConfigError naming the field, the value
and what a valid one looks like. Values are checked against strict grammars rather
than scrubbed: anything outside the grammar (newlines, quotes, ``$(...)``...) is refused.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import semver

from . import redact
from .errors import ConfigError
from .log import UNPRINTABLE

# distribution/reference grammar, restricted to what registries accept in practice.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_IMAGE_RE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
_REGISTRY_RE = re.compile(rf"^(?P<domain>{_DOMAIN})(?:/(?P<namespace>{_COMPONENT}(?:/{_COMPONENT})*))?$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_NUMBER = r"(?:0|[1-9][0-9]{0,8})"  # no leading zeros, at most 9 digits
_RELEASE_RE = re.compile(rf"^v?{_NUMBER}\.{_NUMBER}\.{_NUMBER}$")
_IPVSADM_RE = re.compile(rf"^{_NUMBER}\.{_NUMBER}(?:\.{_NUMBER})?$")
_LABEL_KEY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
_SAFE_TEXT_RE = re.compile(f"^[^{UNPRINTABLE}\"'`$\\\\]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_PLATFORM_RE = re.compile(r"^linux/(?:amd64|arm64|arm/v7|ppc64le|s390x)$")


def _refuse(field: str, value: object, expected: str) -> ConfigError:
    if isinstance(value, str):
        value = redact.value(value)  # a refused URL may carry a password
    shown = repr(value) if len(repr(value)) < 120 else repr(value)[:117] + "...'"
    return ConfigError(f"invalid {field} {shown}", f"expected {expected}")


def kube_router_version(value: str, field: str = "kube-router version") -> str:
    """``v0.3.2`` or ``0.3.2`` -> ``v0.3.2``. Pre-releases are refused."""
    if not isinstance(value, str) or not _RELEASE_RE.fullmatch(value):
        raise _refuse(field, value, "a release such as v0.3.2 (no leading zeros; pre-releases are not supported)")
    parsed = semver.Version.parse(value.removeprefix("v"))
    return f"v{parsed}"


def semver_of(version: str) -> semver.Version:
    """The semver.Version of a validated kube-router version string."""
    return semver.Version.parse(version.removeprefix("v"))


def ipvsadm_version(value: str) -> str:
    if not isinstance(value, str) or not _IPVSADM_RE.fullmatch(value):
        raise _refuse("ipvsadm version", value, "a release such as 1.30 or 1.31 (no leading zeros)")
    return value


def ipvsadm_semver(version: str) -> semver.Version:
    """ipvsadm numbers its releases 1.30, 1.31: read them as 1.30.0, 1.31.0."""
    parts = [int(p) for p in version.split(".")] + [0]
    return semver.Version(parts[0], parts[1], parts[2])


def image_reference(value: str, field: str = "image reference") -> str:
    if not isinstance(value, str) or len(value) > 255 or not _IMAGE_RE.fullmatch(value):
        raise _refuse(field, value, "an image reference such as alpine:3.10.3 or host:5000/ns/name:tag")
    return value


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of a validated reference."""
    match = _IMAGE_RE.fullmatch(reference)
    if not match:
        raise _refuse("image reference", reference, "an image reference")
    return match["name"], match["tag"], match["digest"]


def registry_target(value: str) -> tuple[str, str]:
    """``host[:port][/namespace]`` -> (host, namespace)."""
    text = value.rstrip("/") if isinstance(value, str) else value
    if not isinstance(text, str) or not _REGISTRY_RE.fullmatch(text):
        raise _refuse("--push target", value, "REGISTRY[/NAMESPACE] such as registry:5000 or 127.0.0.1:5000/team")
    match = _REGISTRY_RE.fullmatch(text)
    assert match is not None
    domain = match["domain"]
    if "." not in domain and ":" not in domain and domain != "localhost":
        raise _refuse(
            "--push target",
            value,
            "a registry host with a port or a dot (Docker would read a bare name as a Docker Hub user)",
        )
    return domain, match["namespace"] or ""


def image_name(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", value):
        raise _refuse("image name", value, "lower-case path components such as kube-router")
    return value


def tag(value: str) -> str:
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value):
        raise _refuse("image tag", value, "letters, digits, '_', '.', '-' (at most 128)")
    return value


def url(value: str, field: str = "URL", schemes: tuple[str, ...] = ("http", "https", "file")) -> str:
    if not isinstance(value, str) or not value or not _SAFE_TEXT_RE.fullmatch(value) or " " in value:
        raise _refuse(field, value, "a URL without spaces, quotes or control characters")
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise _refuse(field, value, f"a URL with scheme {' or '.join(schemes)}")
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise _refuse(field, value, "a URL with a host name")
    if parts.scheme == "file" and not parts.path.startswith("/"):
        raise _refuse(field, value, "an absolute file:// URL")
    return value


def sha256(value: str, field: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise _refuse(field, value, "64 lower-case hex digits")
    return value


def commit(value: str, field: str = "commit") -> str:
    if not isinstance(value, str) or not _COMMIT_RE.fullmatch(value):
        raise _refuse(field, value, "a full 40-hex-digit git commit id")
    return value


def label(key: str, value: str) -> tuple[str, str]:
    if not isinstance(key, str) or not _LABEL_KEY_RE.fullmatch(key):
        raise _refuse("label key", key, "lower-case letters, digits, '.' and '-'")
    if not isinstance(value, str) or len(value) > 1024 or not _SAFE_TEXT_RE.fullmatch(value):
        raise _refuse(f"label {key} value", value, "text without newlines, quotes, '$', '`' or '\\'")
    return key, value


def safe_text(value: str, field: str) -> str:
    """Free text that ends up quoted in a Dockerfile (descriptions, package names)."""
    if not isinstance(value, str) or not _SAFE_TEXT_RE.fullmatch(value):
        raise _refuse(field, value, "text without newlines, quotes, '$', '`' or '\\'")
    return value


def relative_path(value: str, field: str) -> PurePosixPath:
    """A path that stays inside its base directory."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise _refuse(field, value, "a relative path inside its directory (no '..', not absolute)")
    return path


def platform(value: str) -> str:
    if not isinstance(value, str) or not _PLATFORM_RE.fullmatch(value):
        raise _refuse("platform", value, "linux/amd64 or linux/arm64")
    return value


# --- grammars of the pinned data (pins.py) and of local paths ------------------------------
_DEBIAN_SUITE_RE = re.compile(r"^[a-z]+(?:-[a-z]+){0,3}$")
_GO_ELEMENT = r"[A-Za-z0-9_~](?:[A-Za-z0-9._~-]{0,62}[A-Za-z0-9_~])?"
_GO_IMPORT_RE = re.compile(
    rf"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+(?:/{_GO_ELEMENT}){{0,20}}$"
)
_GO_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_GO_MODULE_VERSION_RE = re.compile(
    rf"^v{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+){{0,5}})?(?:\+incompatible)?$"
)
_GO_VERSION_RE = re.compile(rf"^1\.{_NUMBER}(?:\.{_NUMBER})?$")
_GO_ARCH_RE = re.compile(r"^linux-(?:amd64|arm64|armv6l|ppc64le|s390x|386)$")
_RANGE_RE = re.compile(rf"^(?:>=|<=|>|<|==|!=){_NUMBER}\.{_NUMBER}\.{_NUMBER}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,126}[A-Za-z0-9])?$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+._-]{0,99}$")
_TAG_SUFFIX_RE = re.compile(r"^(?:-[a-z0-9]+(?:[._-][a-z0-9]+){0,5})?$")
_REL_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*(?:/[A-Za-z0-9_][A-Za-z0-9._+-]*){0,30}$")
PATH_MAX = 4095
NAME_MAX = 255


def _grammar(regex: re.Pattern[str], value: str, field: str, expected: str, longest: int = 1000) -> str:
    """``value`` if it is a string of the grammar (and no longer than ``longest``), else refuse."""
    if not isinstance(value, str) or len(value) > longest or not regex.fullmatch(value) or ".." in value:
        raise _refuse(field, value, expected)
    return value


def debian_suite(value: str) -> str:
    return _grammar(_DEBIAN_SUITE_RE, value, "Debian suite", "a suite name such as bookworm or bookworm-backports", 40)


def go_import_path(value: str, field: str = "Go import path") -> str:
    """A Go package or module path: a domain, then path elements (golang.org/x/mod grammar, ASCII)."""
    expected = "an import path such as github.com/cloudnativelabs/kube-router/pkg/version"
    return _grammar(_GO_IMPORT_RE, value, field, expected, 300)


def go_identifier(value: str) -> str:
    return _grammar(_GO_IDENT_RE, value, "Go identifier", "a Go variable name such as Version")


def go_module_version(value: str, field: str = "Go module version") -> str:
    expected = "a module version such as v0.3.0 or v0.0.0-20200806055634-c6f0eba8f4d8"
    return _grammar(_GO_MODULE_VERSION_RE, value, field, expected, 100)


def go_version(value: str) -> str:
    return _grammar(_GO_VERSION_RE, value, "Go version", "a Go release such as 1.22.3")


def go_arch(value: str) -> str:
    return _grammar(_GO_ARCH_RE, value, "Go toolchain platform", "linux-amd64 or linux-arm64")


def version_ranges(value: str) -> str:
    """``>=0.3.0, <1.1.0``: comma-separated comparisons with full versions."""
    clauses = value.split(",") if isinstance(value, str) else []
    if not clauses or len(clauses) > 4 or not all(_RANGE_RE.fullmatch(c.strip()) for c in clauses):
        raise _refuse("version range", value, "comparisons such as '>=0.3.0, <1.1.0'")
    return value


def name(value: str, field: str) -> str:
    """A short name: letters, digits, '.', '_', '-'."""
    return _grammar(_NAME_RE, value, field, "letters, digits, '.', '_' and '-' (at most 64)")


def file_name(value: str, field: str = "file name") -> str:
    """One plain file name (no directory, no leading dot or dash, no spaces or shell text)."""
    return _grammar(_FILE_NAME_RE, value, field, "a plain file name of letters, digits, '.', '_', '+' and '-'")


def package(value: str, field: str = "package name") -> str:
    """A Debian or Alpine package name."""
    return _grammar(_PACKAGE_RE, value, field, "a package name such as ca-certificates")


def tag_suffix(value: str) -> str:
    return _grammar(_TAG_SUFFIX_RE, value, "tag suffix", "empty or '-' and lower-case words, such as -debian")


def tree_path(value: str, field: str) -> str:
    """A relative path inside a source tree, of plain names only."""
    return _grammar(_REL_PATH_RE, value, field, "a relative path of plain names such as vendor/github.com/osrg/gobgp")


def url_template(value: str, field: str, names: tuple[str, ...]) -> str:
    """A URL with ``{name}`` placeholders, each one of ``names``."""
    import string

    try:
        used = [part[1] for part in string.Formatter().parse(value) if part[1] is not None]
    except (ValueError, TypeError) as exc:
        raise _refuse(field, value, f"a URL with placeholders {{{'}, {'.join(names)}}}") from exc
    if any(n not in names for n in used):
        raise _refuse(field, value, "a URL whose only placeholders are " + ", ".join(f"{{{n}}}" for n in names))
    url(value.format(**{n: "x" for n in names}), field)
    return value


# A Debian kernel as --kernel and --fallback-kernel name one: debian, debian:SUITE or
# debian:VERSION (vm/debian.py resolves them; the suite and version reach URLs and paths).
DEBIAN_KERNEL_SUITE_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z]+)*")
DEBIAN_KERNEL_VERSION_RE = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")


def debian_kernel(value: str, field: str) -> str:
    """``debian``, ``debian:SUITE`` or ``debian:VERSION``, checked whole (a trailing newline
    is no suite), whichever layer set it."""
    rest = value.removeprefix("debian:") if value != "debian" else "trixie"
    if not (
        isinstance(value, str)
        and len(value) <= 100
        and (DEBIAN_KERNEL_SUITE_RE.fullmatch(rest) or DEBIAN_KERNEL_VERSION_RE.fullmatch(rest))
        and ".." not in rest
    ):
        raise _refuse(field, value, "debian, debian:SUITE (debian:trixie) or debian:VERSION (debian:6.12.57)")
    return value


def local_path(value: str, field: str) -> str:
    """A local path as the user wrote it, with ``~`` expanded; not checked for existence."""
    from pathlib import Path

    if not isinstance(value, str) or not value or re.search(f"[{UNPRINTABLE}]", value):
        raise _refuse(field, value, "a path without control characters")
    try:
        expanded = str(Path(value).expanduser())
    except RuntimeError:  # ~user of no such user, or no home directory
        expanded = value
    if expanded.startswith("~"):
        user = value[1:].split("/", 1)[0]
        raise _refuse(field, value, f"a path whose ~{user} names a user of this machine (or the full path)")
    if len(expanded.encode()) > PATH_MAX or any(len(p.encode()) > NAME_MAX for p in expanded.split("/")):
        raise _refuse(field, value[:40] + "…", f"a path of at most {PATH_MAX} bytes, each name at most {NAME_MAX}")
    return expanded
