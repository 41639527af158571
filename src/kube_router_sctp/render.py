"""render stage: the plan -> a Dockerfile, through images/Dockerfile.j2.

The template sees only values that were validated when the plan was built, and every
string in its context is checked once more for newlines and control characters, so no
input can add an instruction of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from . import config, log, validate
from .errors import ConfigError
from .paths import images_dir, project_dir
from .plan import Plan
from .redact import has_credentials, redact, redact_data

TEMPLATE = "Dockerfile.j2"
KUBE_ROUTER_IMPORT = "github.com/cloudnativelabs/kube-router"
LABEL_PREFIX = "io.github.kube-router-sctp"
# The label every image the pipeline builds carries: the kube-router release inside.
VERSION_LABEL = f"{LABEL_PREFIX}.kube-router.version"
BUILD_ARCH = "amd64"  # the Go stages run here; other architectures are cross-compiled


@dataclass(frozen=True)
class BaseImages:
    builder: str
    ipvsadm_builder: str
    runtime: str
    bootstrapped: bool = False


@dataclass(frozen=True)
class Rendered:
    dockerfile: str
    labels: dict[str, str]
    provenance: dict[str, Any]
    source_date_epoch: int
    go_zip: str | None  # file name of the Go toolchain zip in the context, if any
    ca_bundle: Path | None  # the CA bundle the package stages copy (never the runtime image)
    # The stages that install packages, in Dockerfile order: built first, with the network;
    # the whole file then builds with the network off.
    prepare_stages: tuple[str, ...]


def _check_values(value: Any, where: str = "template context") -> None:
    """Refuse any string in the template's context that carries a control character.

    Values were validated when the plan was built; this is the last gate before the
    Dockerfile, so that no value can end an instruction and start one of its own.
    """
    if isinstance(value, str):
        if re.search(f"[{log.UNPRINTABLE}]", value):
            raise ConfigError(
                f"refusing to render {where} = {value!r}: it contains a control character", "fix the value"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, where)
            _check_values(item, f"{where}.{key}")
    elif isinstance(value, list | tuple | set):
        for item in value:
            _check_values(item, where)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            _check_values(getattr(value, item.name), f"{where}.{item.name}")


def _without_credentials(url: str | None, what: str, where: str) -> str | None:
    """Refuse a URL with credentials where the Dockerfile would keep it: in an image layer
    (and its history) for anyone who pulls the image."""
    if url and has_credentials(url):
        raise ConfigError(
            f"{what} URL carries credentials, and {where} would keep them in an image layer",
            "use a proxy or mirror that needs no credentials in the URL (for example an "
            "authenticating proxy on the build host that the build reaches without them)",
        )
    return url


def workdir(layout: str) -> str:
    """Where the kube-router tree sits in the builder: GOPATH lines need their import path."""
    return f"/go/src/{KUBE_ROUTER_IMPORT}" if layout == "gopath" else "/src/kube-router"


def source_date_epoch(plan: Plan) -> int:
    """SOURCE_DATE_EPOCH (build.source-date-epoch, checked in range when it was loaded), else
    the pinned commit's date."""
    if plan.settings.source_date_epoch is not None:
        return plan.settings.source_date_epoch
    return plan.pin.date if plan.pin else 0


def ipvsadm_context(plan: Plan) -> dict[str, Any]:
    """What the ipvsadm-builder stage and the runtime stage need of ipvsadm/."""
    known = plan.ipvsadm_knowledge
    packages = known.packages[plan.family]
    patches = [p.name for p in known.patches]
    return {
        "version": plan.ipvsadm_version,
        "file": plan.ipvsadm.name,
        "sha256": plan.ipvsadm.sha256,
        "patches": patches,
        "build_packages": list(packages.build) + (list(packages.patch) if patches else []),
        "runtime_packages": list(packages.runtime),
    }


def go_version(plan: Plan) -> str:
    go = plan.line.go
    if go.kind == "toolchain":
        return go.value
    if go.kind == "apt":
        match = re.search(r"golang-([0-9]+\.[0-9]+)", go.value)
    else:
        match = re.search(r":([0-9]+\.[0-9]+(?:\.[0-9]+)?)", go.value)
    if not match:
        raise ConfigError(f"cannot tell the Go version of {go.describe()}", "name the version in the package or tag")
    return match[1]


def provenance(plan: Plan, bases: BaseImages) -> dict[str, Any]:
    """The build's inputs, recorded in the image and in the report."""
    pin = plan.pin
    return {
        "kube_router": {
            "version": plan.version,
            "commit": pin.commit if pin else None,
            "tree_sha256": pin.tree_sha256 if pin else None,
            "source": plan.source.describe(),
        },
        "patch_series": {
            "name": plan.series.name,
            "revision": plan.series.revision,
            "native": plan.series.native,
            "patches": [
                {"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in plan.series.patches()
            ],
        },
        "ipvsadm": {
            "version": plan.ipvsadm_version,
            "file": plan.ipvsadm.name,
            "sha256": plan.ipvsadm.sha256,
        },
        "go": {
            "source": plan.line.go.describe(),
            "version": go_version(plan),
            "toolchain_sha256": plan.line.go.sha256,
        },
        "release_line": plan.line.name,
        "family": plan.family,
        "base_images": {
            "builder": bases.builder,
            "ipvsadm_builder": bases.ipvsadm_builder,
            "runtime": bases.runtime,
        },
    }


def labels(plan: Plan, bases: BaseImages, epoch: int) -> dict[str, str]:
    pin = plan.pin
    created = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {
        "org.opencontainers.image.title": "kube-router with SCTP",
        "org.opencontainers.image.description": "NEGATIVE CONTROL: kube-router without the SCTP patches"
        if plan.series.control_of
        else "kube-router built with the kube-router-sctp patch series",
        "org.opencontainers.image.source": "https://github.com/cloudnativelabs/kube-router",
        "org.opencontainers.image.revision": pin.commit if pin else "",
        "org.opencontainers.image.version": plan.tag,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": bases.runtime,
        VERSION_LABEL: plan.version,
        f"{LABEL_PREFIX}.kube-router.commit": pin.commit if pin else "",
        f"{LABEL_PREFIX}.kube-router.tree-sha256": pin.tree_sha256 if pin else "",
        f"{LABEL_PREFIX}.patch-series": f"{plan.series.name} rev {plan.series.revision}"
        + (" (native SCTP, nothing applied)" if plan.series.native else ""),
        f"{LABEL_PREFIX}.patches": " ".join(p.name for p in plan.series.patches()) or "none",
        f"{LABEL_PREFIX}.ipvsadm.version": plan.ipvsadm_version,
        f"{LABEL_PREFIX}.ipvsadm.sha256": plan.ipvsadm.sha256,
    }
    result.update(plan.settings.labels)
    return dict(validate.label(k, v) for k, v in result.items())


def _target(platform: str) -> dict[str, str]:
    os_name, arch = platform.split("/")[:2]
    return {
        "os": os_name,
        "arch": arch,
        "dir": f"{os_name}_{arch}",
        # `go install` puts cross-compiled commands in a subdirectory of GOBIN's default
        "install_subdir": "" if arch == BUILD_ARCH else f"{os_name}_{arch}/",
    }


def apt_ca_bundle(plan: Plan) -> Path | None:
    """The CA bundle apt needs in the package stages: only for an HTTPS Debian mirror; the
    one configured (``mirrors.ca-bundle``), else the host's trust store."""
    mirror = plan.settings.mirrors.debian or ""
    if plan.family != "debian" or not mirror.startswith("https://"):
        return None
    return plan.settings.mirrors.ca_bundle or config.host_ca_bundle()


def render(
    plan: Plan,
    bases: BaseImages,
    *,
    platform: str = "linux/amd64",
    targets: tuple[str, ...] | None = None,
    binaries_in_context: bool = False,
    gobgp_module: str | None = None,
) -> Rendered:
    """Render for ``platform``; the Go stages compile for ``targets`` (default: platform).

    With ``binaries_in_context`` the Go stages are left out and the runtime copies
    ``bin/kube-router`` and ``bin/gobgp`` from the context (multi-platform builds).
    ``gobgp_module`` is the module gobgp is built from (``module@version``, resolved from
    kube-router's go.mod when the modules were fetched; only recorded in the provenance).
    """
    epoch = source_date_epoch(plan)
    version = go_version(plan)
    major_minor = tuple(int(x) for x in version.split(".")[:2])
    go = plan.line.go
    go_zip = f"go{go.value}.linux-amd64.zip" if go.kind == "toolchain" else None
    ca_bundle = apt_ca_bundle(plan)
    layout = plan.line.layout
    gobgp = plan.line.gobgp
    context: dict[str, Any] = {
        "family": plan.family,
        "images": bases,
        "kr": {
            "version": plan.version,
            "commit": plan.pin.commit if plan.pin else "unpinned",
            "layout": layout,
            "workdir": workdir(layout),
            "mod_flag": "-mod=vendor " if layout == "vendor" else "",
            "version_package": plan.line.version_package,
            "version_vars": plan.line.version_vars,
            "image_version": plan.tag,
        },
        "series": plan.series,
        "go": {
            "kind": go.kind,
            "value": go.value,
            "version": version,
            "zip": go_zip,
            "trimpath": "-trimpath " if major_minor >= (1, 13) else "",
        },
        "gobgp": {
            "directory": gobgp.directory,
            "module": gobgp.package is not None,
            "command": gobgp.command,
        },
        "modules": layout == "modules" or gobgp.package is not None,
        "ipvsadm": ipvsadm_context(plan),
        "build_date": dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "apt_ca": ca_bundle is not None,
        # Rewrite apt sources only for a mirror the user chose; bootstrapped bases and
        # registry images keep the sources they came with.
        "debian_mirror": _without_credentials(
            plan.settings.mirrors.debian
            if plan.family == "debian" and plan.settings.chosen("mirrors.debian")
            else None,
            "the Debian mirror",
            "the builder stages' apt sources",
        ),
        "debian_suite": plan.settings.pins.families["debian"].suite if plan.family == "debian" else None,
        "labels": labels(plan, bases, epoch),
        "targets": [_target(t) for t in (targets or (platform,))],
        "runtime_target": _target(platform),
        "binaries_in_context": binaries_in_context,
    }
    env = jinja2.Environment(
        # the template includes ipvsadm/builder.Dockerfile.j2: ipvsadm's stage lives with its pins
        loader=jinja2.FileSystemLoader([str(images_dir()), str(project_dir())]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - a Dockerfile, not HTML; values are validated instead
        keep_trailing_newline=True,
    )
    _check_values(context)
    text = env.get_template(TEMPLATE).render(**context)
    text = re.sub(r"\n{3,}", "\n\n", text).lstrip("\n")
    prepare = ("ipvsadm-deps", "runtime-deps") + (() if binaries_in_context else ("go-toolchain",))
    record = provenance(plan, bases)
    if gobgp_module:
        record["gobgp"] = {"module": gobgp_module, "command": gobgp.command}
    # Nothing rendered may carry a secret (the provenance names the source URL).
    return Rendered(redact(text), context["labels"], redact_data(record), epoch, go_zip, ca_bundle, prepare)


def configured_bases(plan: Plan) -> BaseImages:
    """The base images as configured (before any bootstrap substitution)."""
    return BaseImages(plan.builder_image, plan.ipvsadm_builder_image, plan.runtime_image)


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
