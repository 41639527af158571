"""Two clean builds (no layer cache) of the same inputs give byte-identical binaries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]
BINARIES = ("usr/local/bin/kube-router", "usr/local/bin/gobgp", "usr/local/sbin/ipvsadm")


def clean_build(v032_debian_args: list[str]) -> str:
    result = env.run_cli("build", *v032_debian_args, "--no-cache", "-q", timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[1]  # the image id


def digests(image: str, dest: Path) -> dict[str, str]:
    engine = env.docker_engine()
    out = {}
    for path in BINARIES:
        target = dest / Path(path).name
        target.mkdir(parents=True)
        engine.extract(image, "/" + path, target)
        out[path] = hashlib.sha256((target / Path(path).name).read_bytes()).hexdigest()
    return out


def test_two_clean_builds_give_identical_binaries(tmp_path: Path, v032_debian_args: list[str]) -> None:
    engine = env.docker_engine()
    before = engine.image_ids()
    first_image = clean_build(v032_debian_args)
    first_build = engine.image_ids(dangling=True) - before  # the first build's stages
    try:
        first = digests(first_image, tmp_path / "one")
        second = digests(clean_build(v032_debian_args), tmp_path / "two")
        assert first == second
    finally:
        # The second build's layers stay as the build cache; the first's are garbage.
        engine.remove_unused(first_build | ({first_image} & engine.image_ids(dangling=True)))
