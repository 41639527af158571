"""A build with no layer cache gives byte-identical binaries to the shared (cached) one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]
BINARIES = ("usr/local/bin/kube-router", "usr/local/bin/gobgp", "usr/local/sbin/ipvsadm")


def clean_build(v032_debian_args: list[str]) -> tuple[str, str]:
    """A build with no layer cache, under a repository name of its own so the shared
    build's tag and its cached layers stay as they were; returns (reference, image id)."""
    result = env.run_cli(
        "build", *v032_debian_args, "--image-name", "kube-router-reprotest", "--no-cache", "-q", timeout=3600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reference, image_id = result.stdout.split()[:2]
    return reference, image_id


def digests(image: str, dest: Path) -> dict[str, str]:
    engine = env.docker_engine()
    out = {}
    for path in BINARIES:
        target = dest / Path(path).name
        target.mkdir(parents=True)
        engine.extract(image, "/" + path, target)
        out[path] = hashlib.sha256((target / Path(path).name).read_bytes()).hexdigest()
    return out


def test_a_clean_build_gives_the_binaries_of_the_shared_build(
    tmp_path: Path, debian_image: str, v032_debian_args: list[str]
) -> None:
    """The shared build's layers were themselves a clean build once (on this machine or
    wherever the cache was filled); a build now, with no cache at all, must give the
    same bytes. One clean build instead of two: same claim, half the CI time."""
    engine = env.docker_engine()
    before = engine.image_ids()
    reference, clean_image = clean_build(v032_debian_args)
    stages = engine.image_ids(dangling=True) - before
    try:
        assert digests(clean_image, tmp_path / "clean") == digests(debian_image, tmp_path / "shared")
    finally:
        # The clean build is garbage afterwards: its tag, its image and its stages.
        engine.remove_unused([reference])
        engine.remove_unused(stages | ({clean_image} - before))
