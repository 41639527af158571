"""Base images: use what the daemon has, pull what it lacks, or bootstrap Debian.

Air-gapped sites cannot pull ``alpine`` or ``debian``. For the debian family the
pipeline can make its own base from a Debian mirror (debootstrap + docker import), when
asked (``--bootstrap-bases always``) or when no registry answers (``auto``), and says so.
The bootstrapped image serves as builder and runtime base; its name says what it is.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from . import log
from .cache import remove_tree
from .engine import Engine
from .errors import ConfigError, DockerError, RegistryError
from .plan import Plan
from .render import BaseImages, configured_bases

BOOTSTRAP_REPOSITORY = "kube-router-sctp/bootstrap-debian"
# Left out of the bootstrapped root: documentation and caches nobody reads in a container.
_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt",
    "var/lib/apt/lists",
)


NATIVE = "linux/amd64"


def bootstrap_reference(suite: str, platform: str = NATIVE) -> str:
    arch = platform.split("/")[1]
    return f"{BOOTSTRAP_REPOSITORY}:{suite}" + ("" if platform == NATIVE else f"-{arch}")


def platform_alias(reference: str, platform: str) -> str:
    """A local name for ``reference`` built for ``platform``: the classic image store keeps
    one image per name, so each foreign platform's base gets a name of its own."""
    arch = platform.split("/")[1]
    name, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "latest")
    return f"kube-router-sctp/base-{arch}/{name.replace('/', '-')}:{tag or 'latest'}"


def _present(engine: Engine, reference: str, platform: str) -> bool:
    image = engine.image(reference)
    return image is not None and f"{image.get('Os')}/{image.get('Architecture')}" == platform


def resolve(plan: Plan, engine: Engine, platform: str = NATIVE) -> BaseImages:
    configured = configured_bases(plan)
    mode = plan.settings.bootstrap_bases
    if mode == "always":
        return _use_bootstrap(plan, engine, configured, "asked to (--bootstrap-bases always)", platform)
    wanted = sorted({configured.builder, configured.ipvsadm_builder, configured.runtime})
    names = {ref: ref if platform == NATIVE else platform_alias(ref, platform) for ref in wanted}
    failures = []
    for ref in wanted:
        if _present(engine, names[ref], platform):
            continue
        if plan.settings.offline:  # the daemon must not reach a registry either
            failures.append((ref, "not on the daemon, and --offline pulls nothing"))
            continue
        log.info(f"base image {ref} for {platform} is not on the daemon; pulling it")
        try:
            engine.pull(ref, platform=platform)
            if names[ref] != ref:
                engine.tag(ref, *names[ref].rsplit(":", 1))
        except RegistryError as exc:
            failures.append((ref, exc.message))
    if not failures:
        return BaseImages(names[configured.builder], names[configured.ipvsadm_builder], names[configured.runtime])
    missing = ", ".join(ref for ref, _ in failures)
    if mode == "auto" and plan.family == "debian":
        why = f"{missing} not on the daemon (--offline pulls nothing)" if plan.settings.offline else None
        return _use_bootstrap(plan, engine, configured, why or f"no registry answered for {missing}", platform)
    hint = (
        "load the images (docker load), configure a registry mirror for the daemon, or build the "
        "debian family with --bootstrap-bases auto"
    )
    if plan.family == "debian":
        hint = "allow bootstrapping (--bootstrap-bases auto) or load the images with docker load"
    raise DockerError(f"cannot obtain base image(s) {missing} for {platform}: {failures[0][1]}", hint)


def _use_bootstrap(plan: Plan, engine: Engine, configured: BaseImages, why: str, platform: str) -> BaseImages:
    if plan.family != "debian":
        raise ConfigError(
            f"bootstrapping base images is only possible for the debian family, not {plan.family}",
            "use --base-family debian, or load the alpine images with docker load",
        )
    suite = plan.settings.pins.families["debian"].suite
    reference = bootstrap_reference(suite, platform)
    if _present(engine, reference, platform):
        log.info(f"{why}: using the bootstrapped Debian {suite} base {reference}")
    elif plan.settings.offline:
        raise DockerError(
            f"{why}, and the bootstrapped Debian {suite} base {reference} is not on the daemon either; "
            "--offline cannot bootstrap it (debootstrap needs the Debian mirror)",
            "build once with network (the base stays on the daemon), or docker load the base images",
        )
    else:
        log.info(f"{why}: bootstrapping a Debian {suite} base for {platform} from the Debian mirror")
        bootstrap(engine, suite, plan.settings.mirrors.debian, reference, platform)
    runtime = configured.runtime if plan.settings.runtime_base else reference
    return BaseImages(reference, reference, runtime, bootstrapped=True)


def bootstrap(engine: Engine, suite: str, mirror: str | None, reference: str, platform: str = NATIVE) -> str:
    """debootstrap ``suite`` for ``platform`` from ``mirror`` into the daemon as ``reference``.

    A foreign architecture's second stage runs under binfmt emulation (qemu-user-static).
    The root becomes an image through ``FROM scratch`` + ``ADD`` built for ``platform``,
    which, unlike ``docker import``, records the image's architecture.
    """
    if mirror is None:
        raise ConfigError(
            "no Debian mirror is known for bootstrapping base images",
            "set --debian-mirror URL (or mirrors.debian), or add one to the host's apt sources",
        )
    if shutil.which("debootstrap") is None:
        raise ConfigError("debootstrap is not installed", "apt-get install debootstrap, or load base images instead")
    if os.geteuid() != 0:
        raise ConfigError(
            "bootstrapping base images needs root (debootstrap)", "run as root, or load base images instead"
        )
    work = Path(tempfile.mkdtemp(prefix="krs-bootstrap-"))
    root = work / "root"
    start = time.monotonic()
    try:
        arch = platform.split("/")[1]
        result = subprocess.run(
            ["debootstrap", f"--arch={arch}", "--variant=minbase", suite, str(root), mirror],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise DockerError(f"debootstrap of {suite} from {mirror} failed: {' / '.join(tail)}", "check the mirror")
        for part in _TRIM:
            target = root / part
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir(parents=True)
        context = work / "context.tar"
        dockerfile = (
            "FROM scratch\nADD root.tar /\n"
            f'LABEL io.github.kube-router-sctp.bootstrap="debootstrap --variant=minbase {suite} ({arch})"\n'
            'CMD ["/bin/bash"]\n'
        )
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(work / "root.tar"), "."], check=True)
        with tarfile.open(context, "w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile.encode()))
            tar.add(work / "root.tar", arcname="root.tar")
        remove_tree(root)
        image_id = engine.build(context, reference, platform=platform, on_output=lambda _text: None)
    finally:
        remove_tree(work)
    log.info(f"bootstrapped {reference} ({image_id[:19]}) in {time.monotonic() - start:.0f}s")
    return image_id
