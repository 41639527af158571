"""The Docker boundary: every SDK failure is a DockerError with a fix, containers remove
themselves, an image given by digest reaches another daemon, and no escape sequence of a
build's output reaches the terminal. Against the real daemon (and a second one)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from kube_router_sctp.dataplane.node import transfer_image
from kube_router_sctp.engine import OUTPUT_LIMIT, Container, Engine, daemon_answers
from kube_router_sctp.errors import DockerError
from tests.support import env
from tests.support.dockerd import second_daemon

pytestmark = [pytest.mark.docker]


def test_every_call_fails_as_a_docker_error() -> None:
    engine = env.docker_engine()
    missing = "sha256:" + "0" * 64
    with pytest.raises(DockerError, match="cannot tag"):
        engine.tag(missing, "krs-test/none", "x")
    for call in (engine.logs, engine.running):
        with pytest.raises(DockerError, match="cannot"):
            call("krs-no-such-container")
    with pytest.raises(DockerError, match="cannot exec in"):
        engine.exec("krs-no-such-container", ["true"])
    with pytest.raises(DockerError, match="cannot create a container of"):
        engine.run(missing, ["true"])
    assert daemon_answers("unix:///var/run/docker.sock") is True
    assert daemon_answers("unix:///nonexistent/docker.sock") is False


def test_a_container_removes_itself(debian_image: str) -> None:
    engine = env.docker_engine()
    label = {"io.github.kube-router-sctp.role": f"test-{uuid.uuid4().hex[:8]}"}
    with pytest.raises(RuntimeError), engine.create(debian_image, ["-c", "sleep 60"], entrypoint=["/bin/sh"],
                                                    labels=label) as box:  # fmt: skip
        assert isinstance(box, Container)
        box.start()
        assert box.running()
        raise RuntimeError("the block fails")
    assert engine.containers(next(f"{k}={v}" for k, v in label.items())) == []


def test_files_copied_out_of_an_image_go_through_the_safe_extractor(tmp_path: Path, debian_image: str) -> None:
    engine = env.docker_engine()
    engine.extract(debian_image, "/usr/local/bin", tmp_path)
    binary = tmp_path / "bin" / "kube-router"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # the transfer tar is gone


def test_a_flood_of_output_is_read_to_its_last_16_mib(debian_image: str) -> None:
    """An image under test writes what it likes: 40 MiB on one line, then a verdict. An
    exec and a log each come back as their last 16 MiB from the first whole line in
    them: the verdict kept, the cut line dropped, and the cut said."""
    engine = env.docker_engine()
    flood = "head -c 41943040 /dev/zero | tr '\\0' x; echo; echo VERDICT-LAST"
    label = {"io.github.kube-router-sctp.role": f"test-{uuid.uuid4().hex[:8]}"}
    with engine.create(debian_image, ["-c", f"{flood}; sleep 60"], entrypoint=["/bin/sh"], labels=label) as box:
        box.start()
        ran = box.exec(["/bin/sh", "-c", flood])
        assert ran.exit_code == 0
        deadline = time.monotonic() + 120
        while "VERDICT-LAST" not in (logs := box.logs()) and time.monotonic() < deadline:
            time.sleep(1)
        for output in (ran.output, logs):
            first, rest = output.split("\n", 1)
            assert first.startswith("[kube-router-sctp: ") and "bytes of output dropped" in first, first[:200]
            assert rest == "VERDICT-LAST\n"
            assert f"{(40 << 20) + 1} bytes of output dropped, more than {OUTPUT_LIMIT >> 20} MiB came" in first


@pytest.mark.registry
@pytest.mark.slow
def test_an_image_given_by_digest_reaches_another_daemon(debian_image: str) -> None:
    """What ``verify`` does with the reference a build report names: it failed every time
    ("holds a different image ... run again") because the loaded copy has no repo digest."""
    registry = env.registry()
    builder = env.docker_engine()
    repository = f"{registry}/{env.namespace('digest')}/kube-router"
    builder.tag(debian_image, repository, "candidate")
    try:
        digest = builder.push(repository, "candidate")
        reference = f"{repository}@{digest}"  # as the report's push_candidate names it
        wanted = builder.image(reference)
        assert wanted is not None
        with second_daemon() as address:
            node = Engine(address)
            image_id = transfer_image(builder, node, reference)
            assert image_id == wanted["Id"]
            ran = node.run(image_id, ["--version"], network_mode="none", timeout=60)
            assert ran.exit_code == 0 and "v0.3.2" in ran.output, ran.output
            # A tag reference arrives under its name, and is checked the same way.
            assert transfer_image(builder, node, debian_image) == builder.image(debian_image)["Id"]  # type: ignore[index]
    finally:
        builder.remove_image(f"{repository}:candidate")  # the test's tag only; the image stays


BUILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kube_router_sctp import log
    from kube_router_sctp.engine import Engine
    log.set_level(int(sys.argv[1]))
    log.set_log_dir(Path(sys.argv[3]))
    with log.step("build", "colours"):
        Engine().build(Path(sys.argv[2]), "krs-test/colours:latest", nocache=True)
    log.out(f"log file: {log.log_path()}")
    """
)


@pytest.mark.parametrize("level", [0, 1, 2], ids=["quiet", "default", "verbose"])
def test_build_output_colours_never_reach_the_terminal(tmp_path: Path, debian_image: str, level: int) -> None:
    dockerfile = (
        f"FROM {debian_image}\n"
        "RUN printf '\\033[31mRED\\033[0m \\033]0;retitled\\007 \\033[2Jcleared \\033[1;32mGREEN\\033[0m\\n'\n"
    ).encode()
    context = tmp_path / "context.tar"
    with tarfile.open(context, "w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    result = subprocess.run(
        [sys.executable, "-c", BUILD, str(level), str(context), str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600, cwd=env.PROJECT,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        both = result.stdout + result.stderr
        assert "\x1b" not in both and "\x07" not in both and "\x9b" not in both
        # The step's output, cleaned, streams with -v only (its instruction text is in the step line).
        assert ("RED  cleared GREEN" in result.stderr) == (level == 2)
        assert ("step 2/2 (RUN printf" in result.stderr) == (level >= 1)  # one line per step, timed
        log_file = Path(result.stdout.split("log file: ", 1)[1].strip())
        text = log_file.read_text()
        assert "RED  cleared GREEN" in text and "\x1b" not in text  # always in the log file
    finally:
        env.docker_engine().remove_image("krs-test/colours:latest")
