"""Checks that hold after the whole run, whatever ran: the pipeline's cache holds only
verified entries and no partial files, and every release tag the run pushed sits on an
image whose smoke test passed. Called by the session finaliser in tests/conftest.py, so
they run last because pytest ends the session there, not because of a file name."""

from __future__ import annotations

from kube_router_sctp.cache import Cache, default_root
from kube_router_sctp.render import VERSION_LABEL
from tests.support import env


def remove_session_tags() -> int:
    """Untag what this session's pushes left on the local daemon (``REGISTRY/<namespace>/…``
    tags of the namespaces it made): the images stay where other tags or the layer cache
    hold them, nothing of the session's pushes piles up run after run."""
    if not env.NAMESPACES:
        return 0
    from kube_router_sctp.engine import Engine
    from kube_router_sctp.errors import DockerError

    try:
        engine = Engine()
    except DockerError:
        return 0  # no daemon now: nothing of ours can be left on it
    removed = 0
    try:
        images = engine.images(VERSION_LABEL)
    except DockerError:
        return 0  # the daemon went away since: nothing can be untagged on it
    for image in images:
        for reference in image.get("RepoTags") or []:
            repository = reference.rsplit(":", 1)[0]
            parts = repository.split("/")
            if len(parts) > 2 and parts[1] in env.NAMESPACES:
                engine.untag(reference)
                removed += 1
    return removed


def problems() -> list[str]:
    found: list[str] = []
    if env.CLI_RUNS:
        found += _cache_problems()
    found += _release_tag_problems()
    return found


def _cache_problems() -> list[str]:
    cache = Cache(default_root())
    if not cache.root.exists():
        return []
    found = [f"cache entry {name} did not match its name (removed)" for name in cache.verify_all()]
    found += [f"partial file left in the cache: {p}" for p in cache.tmp_dir().glob("*.part")]
    return found


def _release_tag_problems() -> list[str]:
    found: list[str] = []
    for run in env.SESSION_PUSHES:
        report = run["report"]
        assert isinstance(report, dict)
        stages = report["stages"]
        promoted = stages.get("promote", {}).get("tags", {})
        if not promoted:
            continue
        if stages.get("smoke", {}).get("passed") is not True:
            found.append(f"{run['push']}: release tags {sorted(promoted)} without a passed smoke test")
        for reference, digest in promoted.items():
            host, _, rest = reference.partition("/")
            if host != env.REGISTRY:
                continue  # a registry a fault test started and stopped: that test checked its tags
            repository, _, tag = rest.rpartition(":")
            served = env.registry_digest(repository, tag)
            if served != digest:
                found.append(f"{reference}: the registry serves {served}, the run released {digest}")
    return found
