"""Where the suite gets upstream kube-router source: the same place the main command does.

``python build.py`` resolves ``build.kube-router-source`` through the configuration layers
(user config, ``KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE``, flag). The suite resolves the same
setting, through the same code, once, before the tests isolate themselves from the
user's configuration; every test that needs source gets it from the ``upstream`` fixture
(tests/conftest.py), which passes it to the CLI explicitly. Without a configured source a
release whose verified tree the pipeline's cache already holds still works (the cache is
read, the default source never contacted); anything else is a missing part: a skip that
the run's last lines count, or, under ``CI=true``, a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support import env


@dataclass(frozen=True)
class Upstream:
    source: str | None  # the configured kube-router source, as the main command would use it
    problem: str  # why there is none ("" when there is one)
    how_to: str  # one sentence: how to configure it

    def reason(self) -> str:
        return f"no kube-router source: {self.problem} — {self.how_to}"

    def args(self, version: str) -> list[str]:
        """CLI arguments that give ``build.py`` the source of ``version``: the configured
        source, or nothing when the pipeline's cache already holds the pinned tree."""
        if self.source:
            return ["--kube-router-source", self.source]
        if _cached(version):
            return []
        env.missing(self.reason())
        raise AssertionError("unreachable")

    def repository(self) -> str:
        """The configured source itself (tests that need a git repository to copy or a
        source for a cache of their own); the default cache cannot stand in for it."""
        if not self.source:
            env.missing(self.reason())
        assert self.source is not None
        return self.source


def resolve() -> Upstream:
    """Read the user's configuration the way ``build.py`` does (call before isolating)."""
    from kube_router_sctp import config
    from kube_router_sctp.errors import PipelineError

    where = config.user_config_path()
    how_to = (
        f'put `[build] kube-router-source = "/path/to/kube-router.git"` (a git mirror of kube-router) '
        f"in {where}, or export KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE=/path/to/kube-router.git (README, Quick start)"
    )
    try:
        source = config.load().kube_router_source
    except PipelineError as exc:
        return Upstream(None, f"the configuration does not load ({exc.one_line()})", how_to)
    if not source:
        return Upstream(None, "none is configured", how_to)
    if "://" not in source and not Path(source).expanduser().exists():
        return Upstream(None, f"the configured source {source} does not exist", how_to)
    return Upstream(source, "", how_to)


def _cached(version: str) -> bool:
    from kube_router_sctp import config
    from kube_router_sctp.cache import Cache

    settings = config.load({"build.kube-router-version": version})
    pin = settings.pins.releases.get(version)
    return pin is not None and Cache(settings.cache_dir).tree_path(pin.tree_sha256).is_dir()
