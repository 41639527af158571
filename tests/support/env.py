"""What the integration tests need from the machine, found at run time (never a path
written into the repository). A missing part is a skip that names it, except under
``CI=true``: there the machine is supposed to have everything (``.ci/run`` installs and
starts it), so a missing part fails the test instead of hiding behind a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

PROJECT = Path(__file__).resolve().parents[2]
REGISTRY = os.environ.get("KRS_TEST_REGISTRY", "127.0.0.1:5000")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """A part the test needs is absent: skip saying what, or fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"CI=true and a part is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        missing(f"needs {binary}: apt-get install {package} (scripts/setup-host.sh installs it)")
    assert path is not None
    return path


def docker_engine():  # type: ignore[no-untyped-def]
    from kube_router_sctp.engine import Engine
    from kube_router_sctp.errors import DockerError

    try:
        return Engine()
    except DockerError as exc:
        missing(f"needs a Docker daemon: {exc.one_line()}")


def registry() -> str:
    try:
        requests.get(f"http://{REGISTRY}/v2/", timeout=3).raise_for_status()
    except requests.RequestException as exc:
        missing(f"needs a registry on {REGISTRY} (scripts/setup-host.sh starts one): {exc}")
    return REGISTRY


# Registry namespaces made by this session: their local tags are removed after the suite.
NAMESPACES: list[str] = []


def namespace(prefix: str) -> str:
    """A registry namespace of its own for one test, so tests never see each other's tags."""
    made = f"{prefix}-{uuid.uuid4().hex[:8]}"
    NAMESPACES.append(made)
    return made


# Reports of every pipeline run that pushed, for the after-suite check that the registry
# holds release tags only on smoked images (tests/support/after_suite.py).
SESSION_PUSHES: list[dict[str, object]] = []
# Whether any run of the CLI may have used the default cache (checked after the suite).
CLI_RUNS: list[tuple[str, ...]] = []


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """Run `python build.py ARGS` as a user would, with the user's real configuration."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    CLI_RUNS.append(args)
    result = _run(args, full_env, timeout)
    if "--push" in args and "--report" in args:
        report = Path(args[args.index("--report") + 1])
        if report.is_file():
            import json

            SESSION_PUSHES.append({"push": args[args.index("--push") + 1], "report": json.loads(report.read_text())})
    return result


def _run(args: tuple[str, ...], full_env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT / "build.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=PROJECT,
    )


def registry_tags(repository: str) -> list[str]:
    response = requests.get(f"http://{REGISTRY}/v2/{repository}/tags/list", timeout=10)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return sorted(response.json().get("tags") or [])


def registry_digest(repository: str, reference: str) -> str | None:
    response = requests.head(
        f"http://{REGISTRY}/v2/{repository}/manifests/{reference}",
        # A manifest list must be asked for as one: to a client that does not accept lists
        # the registry answers with the linux/amd64 entry's manifest (and its digest).
        headers={
            "Accept": ", ".join(
                (
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                )
            )
        },
        timeout=10,
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.headers.get("Docker-Content-Digest")


def release_tag(version: str, suffix: str = "-debian") -> str:
    """The image tag the pipeline gives ``version`` today (``v0.3.2-sctp.2-debian``): the
    revision is its series' in patches/kube-router/series.toml, never written into a test."""
    from kube_router_sctp import patch, plan

    (tag,) = plan.release_tags(version, patch.select(patch.load_index(), version).revision, suffix)
    return tag
