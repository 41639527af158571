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

from .errors import ConfigError

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
_IPVSADM_RE = re.compile(r"^[0-9]+\.[0-9]+(?:\.[0-9]+)?$")
_LABEL_KEY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
_SAFE_TEXT_RE = re.compile(r"^[^\x00-\x1f\x7f\"'`$\\]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_PLATFORM_RE = re.compile(r"^linux/(?:amd64|arm64|arm/v7|ppc64le|s390x)$")


def _refuse(field: str, value: object, expected: str) -> ConfigError:
    shown = repr(value) if len(repr(value)) < 120 else repr(value)[:117] + "...'"
    return ConfigError(f"invalid {field} {shown}", f"expected {expected}")


def kube_router_version(value: str, field: str = "kube-router version") -> str:
    """``v0.3.2`` or ``0.3.2`` -> ``v0.3.2``. Pre-releases are refused."""
    text = value
    if not isinstance(text, str) or not re.fullmatch(r"v?[0-9]+\.[0-9]+\.[0-9]+", text):
        raise _refuse(field, value, "a release such as v0.3.2 (pre-releases are not supported)")
    parsed = semver.Version.parse(text.removeprefix("v"))
    return f"v{parsed}"


def semver_of(version: str) -> semver.Version:
    """The semver.Version of a validated kube-router version string."""
    return semver.Version.parse(version.removeprefix("v"))


def ipvsadm_version(value: str) -> str:
    if not isinstance(value, str) or not _IPVSADM_RE.fullmatch(value):
        raise _refuse("ipvsadm version", value, "a release such as 1.30 or 1.31")
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
