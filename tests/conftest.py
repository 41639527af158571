"""Shared fixtures. Unit tests need nothing; integration tests say what they need in
their markers and get it from the fixtures here (a missing part skips, naming it, or
fails the run under ``CI=true``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import after_suite, env
from tests.support.upstream import Upstream, resolve

# Resolved before any test isolates itself from the user's configuration, exactly as the
# main command resolves build.kube-router-source.
UPSTREAM = resolve()

# The build every integration test shares when it needs "an image": patched kube-router
# v0.3.2 on the debian family with ipvsadm 1.31 (what this machine can build).
V032_DEBIAN = ("--kube-router-version", "v0.3.2", "--base-family", "debian", "--ipvsadm-version", "1.31")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under CI=true a run that needs upstream source and has none stops before it starts,
    with one line saying how to configure it."""
    needs = [item for item in items if "upstream" in getattr(item, "fixturenames", ())]
    if needs and env.in_ci() and UPSTREAM.source is None:
        pytest.exit(f"CI=true: {len(needs)} selected test(s) need kube-router source, but {UPSTREAM.reason()}", 1)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """Say in the run's last lines (after the short summary, before the counts) when
    tests were skipped for lack of source."""
    result = yield
    skipped = terminalreporter.stats.get("skipped", [])
    lacking = [r for r in skipped if "no kube-router source" in str(getattr(r, "longrepr", ""))]
    if lacking:
        terminalreporter.write_sep("!", f"{len(lacking)} test(s) skipped for lack of kube-router source", red=True)
        terminalreporter.write_line(UPSTREAM.reason())
    return result


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep tests away from the user's config and environment overrides: what a test
    needs from them (the kube-router source) it gets from a fixture, explicitly."""
    for key in list(os.environ):
        if key.startswith("KUBE_ROUTER_SCTP_") and key != "KUBE_ROUTER_SCTP_PROJECT_DIR":
            monkeypatch.delenv(key)
    empty = tmp_path_factory.mktemp("no-user-config") / "config.toml"
    monkeypatch.setenv("KUBE_ROUTER_SCTP_CONFIG", str(empty))
    yield


@pytest.fixture(scope="session", autouse=True)
def _after_suite() -> Iterator[None]:
    """The session finaliser: checks that hold after everything else ran."""
    yield
    problems = after_suite.problems()
    try:
        after_suite.remove_session_tags()
    finally:  # a daemon that fails the untagging must not hide what the checks found
        assert not problems, "after the suite: " + "; ".join(problems)


@pytest.fixture
def project_dir() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def upstream() -> Upstream:
    """Upstream kube-router source, the one way every test gets it."""
    return UPSTREAM


@pytest.fixture(scope="session")
def v032_debian_args(upstream: Upstream) -> list[str]:
    """CLI arguments of the shared v0.3.2 / debian / ipvsadm 1.31 build, source included."""
    return [*upstream.args("v0.3.2"), *V032_DEBIAN]


@pytest.fixture(scope="session")
def debian_image(v032_debian_args: list[str]) -> str:
    """The shared build's image, built by the pipeline itself (a cache hit after the first
    build). Tests that need a real image use this rather than hoping an earlier run left
    one behind."""
    env.docker_engine()
    result = env.run_cli("build", *v032_debian_args, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[0]


@pytest.fixture(scope="session")
def controlplane_binaries():  # type: ignore[no-untyped-def]
    """The dataplane proof's control plane (kube-apiserver, kube-controller-manager), built
    once per machine by the project's own code from its pin (about ten minutes of compile on
    two idle cores), then found in the cache in seconds. `.ci/run` builds it before the
    suite, so its cold build is not billed to one test's time-out."""
    from kube_router_sctp import config as settings
    from kube_router_sctp.controlplane import HOST_TOOLS
    from kube_router_sctp.controlplane import build as cpbuild

    for tool, package in HOST_TOOLS:
        env.require_binary(tool, package)
    env.docker_engine()
    return cpbuild.binaries(settings.load())
