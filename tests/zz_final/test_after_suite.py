"""Runs last (directory order): after the whole suite, the cache holds only verified
entries and every release tag the suite pushed sits on an image that passed smoke."""

from __future__ import annotations

import pytest

from kube_router_sctp import config
from kube_router_sctp.cache import Cache
from tests.support import env


def test_cache_holds_only_verified_entries() -> None:
    cache = Cache(config.load().cache_dir)
    if not cache.root.exists():
        pytest.skip("no cache was used")
    assert cache.verify_all() == []
    assert not list(cache.tmp_dir().glob("*.part"))


def test_release_tags_only_on_smoked_images() -> None:
    if not env.SESSION_PUSHES:
        pytest.skip("this session pushed nothing")
    for run in env.SESSION_PUSHES:
        report = run["report"]
        assert isinstance(report, dict)
        stages = report["stages"]
        promoted = stages.get("promote", {}).get("tags", {})
        if not promoted:
            continue
        smoke = stages.get("smoke", {})
        assert smoke.get("passed") is True, f"{run['push']}: release tags {list(promoted)} without a passed smoke"
        for reference, digest in promoted.items():
            host, _, rest = reference.partition("/")
            if host != env.REGISTRY:
                # A registry a fault test started and stopped: that test checked its tags.
                continue
            repository, _, tag = rest.rpartition(":")
            assert env.registry_digest(repository, tag) == digest, reference
