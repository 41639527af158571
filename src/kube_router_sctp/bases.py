"""Base images: use what the daemon has, pull what it lacks, or bootstrap Debian.

Air-gapped sites cannot pull ``alpine`` or ``debian``. For the debian family the
pipeline can make its own base from a Debian mirror (debootstrap + docker import), when
asked (``--bootstrap-bases always``) or when no registry answers (``auto``), and says so.
The bootstrapped image serves as builder and runtime base; its name says what it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


def bootstrap_reference(suite: str) -> str:
    return f"{BOOTSTRAP_REPOSITORY}:{suite}"


def resolve(plan: Plan, engine: Engine) -> BaseImages:
    configured = configured_bases(plan)
    mode = plan.settings.bootstrap_bases
    wanted = sorted({configured.builder, configured.ipvsadm_builder, configured.runtime})
    if mode == "always":
        return _use_bootstrap(plan, engine, configured, "asked to (--bootstrap-bases always)")
    missing = [ref for ref in wanted if engine.image(ref) is None]
    failures = []
    for ref in missing:
        log.info(f"base image {ref} is not on the daemon; pulling it")
        try:
            engine.pull(ref)
        except RegistryError as exc:
            failures.append((ref, exc.message))
    if not failures:
        return configured
    names = ", ".join(ref for ref, _ in failures)
    if mode == "auto" and plan.family == "debian":
        return _use_bootstrap(plan, engine, configured, f"no registry answered for {names}")
    hint = (
        "load the images (docker load), configure a registry mirror for the daemon, or build the "
        "debian family with --bootstrap-bases auto"
    )
    if plan.family == "debian":
        hint = "allow bootstrapping (--bootstrap-bases auto) or load the images with docker load"
    raise DockerError(f"cannot obtain base image(s) {names}: {failures[0][1]}", hint)


def _use_bootstrap(plan: Plan, engine: Engine, configured: BaseImages, why: str) -> BaseImages:
    if plan.family != "debian":
        raise ConfigError(
            f"bootstrapping base images is only possible for the debian family, not {plan.family}",
            "use --base-family debian, or load the alpine images with docker load",
        )
    suite = str(plan.settings.data.get("families", {}).get("debian", {}).get("suite", "bookworm"))
    reference = bootstrap_reference(suite)
    if engine.image(reference) is not None:
        log.info(f"{why}: using the bootstrapped Debian {suite} base {reference}")
    else:
        log.info(f"{why}: bootstrapping a Debian {suite} base from the Debian mirror")
        bootstrap(engine, suite, plan.settings.mirrors.debian, reference)
    runtime = configured.runtime if plan.settings.runtime_base else reference
    return BaseImages(reference, reference, runtime, bootstrapped=True)


def bootstrap(engine: Engine, suite: str, mirror: str | None, reference: str) -> str:
    """debootstrap ``suite`` from ``mirror`` and import it as ``reference``."""
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
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(root), mirror],
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
        tarball = work / "root.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True)
        repository, _, tag = reference.rpartition(":")
        image_id = engine.import_image(
            tarball,
            repository,
            tag,
            changes=[
                'CMD ["/bin/bash"]',
                f'LABEL io.github.kube-router-sctp.bootstrap="debootstrap --variant=minbase {suite}"',
            ],
        )
    finally:
        remove_tree(work)
    log.info(f"bootstrapped {reference} ({image_id[:19]}) in {time.monotonic() - start:.0f}s")
    return image_id
