"""Two clean builds (no layer cache) of the same inputs give byte-identical binaries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import upstream_source_for
from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]
BINARIES = ("usr/local/bin/kube-router", "usr/local/bin/gobgp", "usr/local/sbin/ipvsadm")


def clean_build() -> str:
    source = upstream_source_for("v0.3.2")
    args = ["build", *(["--kube-router-source", source] if source else []), "--kube-router-version", "v0.3.2",
            "--base-family", "debian", "--ipvsadm-version", "1.31", "--no-cache", "-q"]  # fmt: skip
    result = env.run_cli(*args, timeout=3600)
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


def test_two_clean_builds_give_identical_binaries(tmp_path: Path) -> None:
    engine = env.docker_engine()
    before = engine.image_ids()
    first_image = clean_build()
    first_build = engine.image_ids(dangling=True) - before  # the first build's stages
    try:
        first = digests(first_image, tmp_path / "one")
        second = digests(clean_build(), tmp_path / "two")
        assert first == second
    finally:
        # The second build's layers stay as the build cache; the first's are garbage.
        engine.remove_unused(first_build | ({first_image} & engine.image_ids(dangling=True)))
