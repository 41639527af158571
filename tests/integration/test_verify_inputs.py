"""`verify` reads an image's labels as hostile input, on the real daemon: a version label
that is not a release stops the run with one line and exit status 2, before any node
boots and before anything is written."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest

from kube_router_sctp.render import VERSION_LABEL
from tests.support import env

pytestmark = [pytest.mark.docker]


@pytest.mark.parametrize("label", ["v2.7.1; touch /tmp/owned", "latest", "v2.9.0-rc1", "v0.3.2 v9.9.9"])
def test_a_version_label_that_is_not_a_release_stops_verify(label: str, tmp_path: Path, debian_image: str) -> None:
    engine = env.docker_engine()
    dockerfile = f"FROM {debian_image}\nLABEL {VERSION_LABEL}={label!r}\n".replace("'", '"').encode()
    context = tmp_path / "context.tar"
    with tarfile.open(context, "w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    reference = f"krs-test/labelled-{uuid.uuid4().hex[:8]}:latest"
    engine.build(context, reference)
    try:
        assert engine.image(reference)["Config"]["Labels"][VERSION_LABEL] == label  # type: ignore[index]
        results = tmp_path / "results" / "run"
        result = env.run_cli("verify", reference, "--results", str(results), timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if "invalid kube-router version label" in line]
        assert len(lines) == 1 and reference in lines[0], result.stderr[-2000:]
        assert "boot" not in result.stderr.lower()
        assert not results.parent.exists() or not any(results.parent.iterdir())
    finally:
        engine.remove_image(reference)
