"""Shared fixtures. Unit tests need nothing; integration tests say what they need in
their markers and skip with the reason when it is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep unit tests away from the user's config and environment overrides."""
    if os.environ.get("KRS_TEST_USE_USER_CONFIG") == "1":
        yield
        return
    for key in list(os.environ):
        if key.startswith("KUBE_ROUTER_SCTP_") and key != "KUBE_ROUTER_SCTP_PROJECT_DIR":
            monkeypatch.delenv(key)
    empty = tmp_path_factory.mktemp("no-user-config") / "config.toml"
    monkeypatch.setenv("KUBE_ROUTER_SCTP_CONFIG", str(empty))
    yield


@pytest.fixture
def project_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def _real_user_source() -> str | None:
    """The kube-router source the user configured (read before tests isolate the config)."""
    from kube_router_sctp import config

    explicit = os.environ.get("KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE")
    if explicit:
        return explicit
    path = config.user_config_path()
    if not path.is_file():
        return None
    import tomllib

    value = tomllib.loads(path.read_text()).get("build", {}).get("kube-router-source")
    return str(value) if value else None


REAL_USER_SOURCE = _real_user_source()


def upstream_source_for(version: str) -> str | None:
    """A kube-router source usable for ``version``, or skip the test saying why.

    Tests never name a path of this machine: the source comes from the user's
    configuration (build.kube-router-source, or KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE), or
    the pipeline's cache already holds the pinned tree (then None: the default source is
    never contacted, the cached tree is used).
    """
    from kube_router_sctp import config
    from kube_router_sctp.cache import Cache

    if REAL_USER_SOURCE and Path(REAL_USER_SOURCE).exists():
        return REAL_USER_SOURCE
    settings = config.load({"build.kube-router-version": version})
    pin = settings.data["kube-router"]["releases"].get(version, {})
    cache = Cache(settings.cache_dir)
    if pin and cache.tree_path(pin["tree-sha256"]).is_dir():
        return None
    pytest.skip(
        f"no kube-router source for {version}: set build.kube-router-source in "
        f"{config.user_config_path()} (a git mirror of kube-router) or fill the cache once"
    )


@pytest.fixture(scope="session")
def debian_image() -> str:
    """The debian-family image of patched kube-router v0.3.2 with ipvsadm 1.31, built by the
    pipeline itself (a cache hit after the first build). Tests that need a real image use
    this rather than hoping an earlier run left one behind."""
    from tests.support import env

    env.docker_engine()
    source = upstream_source_for("v0.3.2")
    args = ["build", "--kube-router-version", "v0.3.2", "--base-family", "debian", "--ipvsadm-version", "1.31", "-q"]
    if source:
        args += ["--kube-router-source", source]
    result = env.run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[0]
