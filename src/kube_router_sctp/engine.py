"""The one place that talks to Docker (the Engine API through the docker SDK).

Builds and pushes are streamed with the low-level client, because the high-level one
returns only at the end and reports push failures inside an HTTP 200 stream. Every SDK
call runs inside ``_calling``, which turns the SDK's and the HTTP stack's exceptions into
a DockerError or RegistryError naming the call and the fix: nothing outside this module
imports ``docker`` or talks HTTP to a daemon. Containers are ``Container`` objects that
remove themselves when their ``with`` block ends (the idea of cibuildwheel's
``OCIContainer``). Registry credentials come from the Docker config the SDK reads; they
are never logged.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import urllib3.exceptions

from . import archive, log
from .errors import DockerError, PipelineError, RegistryError
from .redact import redact

_STEP_RE = re.compile(r"^Step (\d+/\d+) : (.*)$")
_LOADED_ID_RE = re.compile(r"Loaded image ID: (sha256:[0-9a-f]{64})")
_LOADED_NAME_RE = re.compile(r"Loaded image: (\S+)")
# What the SDK and the HTTP stack below it raise: the daemon refused, went away or
# answered nonsense. Anything else is not Docker's and is left alone.
_SDK_ERRORS = (docker.errors.DockerException, requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError)
_PING_API = "1.24"  # any daemon of the last years answers /_ping at this version
# A container's output is the image's to write, and the image is under test: what is
# read of one log or one exec is bounded. The end is kept (verdicts and errors are
# printed last) and the cut is said on the first line.
OUTPUT_LIMIT = 16 << 20


@contextlib.contextmanager
def _calling(what: str, fix: str = "check the daemon", error: type[PipelineError] = DockerError) -> Iterator[None]:
    """Run an SDK call; its failure becomes ``error`` saying ``what`` failed and ``fix``."""
    try:
        yield
    except _SDK_ERRORS as exc:
        raise error(f"{what}: {_short(exc)}", fix) from exc


def bounded_text(chunks: Iterable[bytes], limit: int = OUTPUT_LIMIT) -> str:
    """Streamed output as text, its last ``limit`` bytes at most, from the first whole
    line in them; where more came, the first line says how much was dropped. What is
    held stays within a few times ``limit`` however the output is chunked."""
    kept = bytearray()
    dropped = 0
    line_start = True  # whether kept[0] begins a line

    def keep_last(size: int) -> None:
        nonlocal dropped, line_start
        cut = len(kept) - size
        line_start = kept[cut - 1] == 0x0A
        dropped += cut
        del kept[:cut]

    for chunk in chunks:
        kept += chunk
        if len(kept) > 2 * limit:  # trimmed now and then, not per chunk: linear time
            keep_last(limit)
    if len(kept) > limit:
        keep_last(limit)
    if not line_start:
        # The cut fell inside a line: drop the rest of it, so that no line is read without
        # its beginning (a prefix, a "CHECK" or a verdict's start), unless it is all there is.
        newline = kept.find(b"\n")
        if 0 <= newline < len(kept) - 1:
            dropped += newline + 1
            del kept[: newline + 1]
    text = kept.decode(errors="replace")
    if dropped:
        most = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
        text = f"[kube-router-sctp: {dropped} bytes of output dropped, more than {most} came]\n" + text
    return text


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) if isinstance(exc, docker.errors.APIError) else None


def daemon_answers(base_url: str, timeout: float = 3.0) -> bool:
    """Whether a Docker daemon answers ``/_ping`` at ``base_url`` (``tcp://host:port``,
    ``unix://path``) right now; for waiting on a daemon that is starting."""
    try:
        client = docker.APIClient(base_url=base_url, version=_PING_API, timeout=timeout)
    except _SDK_ERRORS:
        return False
    try:
        return bool(client.ping())
    except _SDK_ERRORS:
        return False
    finally:
        client.close()


def registry_api_status(url: str, timeout: float = 5.0) -> int | str:
    """The HTTP status a registry's ``/v2/`` answers with, or why it did not answer."""
    try:
        return requests.get(url, timeout=timeout).status_code
    except requests.RequestException as exc:
        return redact(str(exc).splitlines()[0][:160]) if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str


class Container:
    """A container on one daemon. ``with`` it: however the block ends, it is removed."""

    def __init__(self, engine: Engine, container_id: str, image: str = "") -> None:
        self.engine = engine
        self.id = container_id
        self.image = image or container_id[:12]

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    @property
    def _api(self) -> Any:
        return self.engine.api

    def start(self) -> None:
        with _calling(f"cannot start a container of {self.image}"):
            self._api.start(self.id)

    def wait(self, timeout: int) -> int:
        with _calling(f"the container of {self.image} did not finish", "check the daemon and the command's time limit"):
            status = self._api.wait(self.id, timeout=timeout)
        return int(status.get("StatusCode", -1))

    def logs(self) -> str:
        """The container's output so far (its last ``OUTPUT_LIMIT`` bytes)."""
        with _calling(f"cannot read the log of {self.id[:12]}"):
            return bounded_text(self._api.logs(self.id, stdout=True, stderr=True, stream=True, follow=False))

    def running(self) -> bool:
        with _calling(f"cannot inspect container {self.id[:12]}"):
            return bool(self._api.inspect_container(self.id)["State"].get("Running"))

    def pid(self) -> int:
        """The process id of the running container's first process, as the daemon's host
        sees it (a network namespace to attach)."""
        with _calling(f"cannot inspect container {self.id[:12]}"):
            return int(self._api.inspect_container(self.id)["State"].get("Pid") or 0)

    def exec(self, command: list[str]) -> RunResult:
        """Run a command in the running container; its exit status and output."""
        with _calling(f"cannot exec in {self.id[:12]}", "check the container"):
            run = self._api.exec_create(self.id, command)
            output = bounded_text(self._api.exec_start(run["Id"], stream=True))
            code = self._api.exec_inspect(run["Id"]).get("ExitCode")
        return RunResult(int(code) if code is not None else -1, output)

    def put_archive(self, directory: str, data: bytes | Path) -> None:
        """Unpack a tar (bytes or a file) into the container before it starts; works with
        remote daemons too, unlike bind mounts."""
        with _calling(f"cannot copy files into a container of {self.image}"):
            if isinstance(data, Path):
                with data.open("rb") as handle:
                    self._api.put_archive(self.id, directory, handle)
            else:
                self._api.put_archive(self.id, directory, data)

    def put_file(self, path: str, text: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        self.put_archive("/", buffer.getvalue())

    def save_archive(self, path: str, dest: Path) -> None:
        """``path`` of the container as the daemon's tar, written to the file ``dest``
        unopened (the caller extracts it, checking every member)."""
        with _calling(f"cannot copy {path} out of {self.image}"):
            stream, _ = self._api.get_archive(self.id, path)
            with dest.open("wb") as handle:
                for chunk in stream:
                    handle.write(chunk)

    def copy_out(self, path: str, dest: Path) -> None:
        """``path`` of the container into ``dest``, through the safe extractor (an image's
        files are as hostile as the source they were built from)."""
        archive_file = dest / ".copy-out.tar"
        self.save_archive(path, archive_file)
        try:
            with tarfile.open(archive_file, tarinfo=archive.BoundedTarInfo) as tar:
                archive.extract_tar(tar, dest, f"{path} of {self.image}")
        except tarfile.TarError as exc:
            raise DockerError(
                f"the daemon sent {path} of {self.image} as a damaged archive ({exc})", "see its log"
            ) from exc
        finally:
            archive_file.unlink(missing_ok=True)

    def export(self, dest: Path) -> None:
        with _calling(f"cannot export {self.image}", "check the daemon's disk space"), dest.open("wb") as handle:
            for chunk in self._api.export(self.id):
                handle.write(chunk)

    def remove(self) -> None:
        try:
            self._api.remove_container(self.id, force=True)
        except _SDK_ERRORS as exc:
            if _status(exc) != 404:
                log.warn(f"could not remove container {self.id[:12]}: {_short(exc)}")


class Engine:
    def __init__(self, base_url: str | None = None, timeout: int = 600) -> None:
        self.base_url = base_url
        try:
            if base_url:
                self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
            else:
                self.api = docker.from_env(version="auto", timeout=timeout).api
            self.api.ping()
        except _SDK_ERRORS as exc:
            where = base_url or "the local socket (DOCKER_HOST unset)"
            raise DockerError(
                f"the Docker daemon at {where} is not reachable ({_short(exc)})",
                "start dockerd, or point DOCKER_HOST / --docker-host at a running daemon",
            ) from exc

    def describe(self) -> str:
        return self.base_url or "local Docker daemon"

    def version(self) -> dict[str, Any]:
        with _calling(f"cannot ask {self.describe()} for its version"):
            result: dict[str, Any] = self.api.version()
        return result

    def info(self) -> dict[str, Any]:
        with _calling(f"cannot ask {self.describe()} for its configuration"):
            result: dict[str, Any] = self.api.info()
        return result

    # -- images ---------------------------------------------------------------------
    def image(self, reference: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.api.inspect_image(reference)
            return result
        except _SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.ImageNotFound) or _status(exc) == 404:
                return None
            raise DockerError(f"cannot inspect {reference}: {_short(exc)}", "check the daemon") from exc

    def pull(self, reference: str, platform: str | None = None) -> None:
        repository, _, tag = reference.partition("@") if "@" in reference else _split_tag(reference)
        with _calling(f"cannot pull {reference}", "check the reference, the registry and the daemon", RegistryError):
            stream = self.api.pull(repository, tag=tag or None, stream=True, decode=True, platform=platform)
            for event in stream:
                if "error" in event:
                    raise RegistryError(
                        f"cannot pull {reference}: {redact(str(event['error']))}",
                        "check the reference, the registry and your credentials",
                    )

    def tag(self, image: str, repository: str, tag: str) -> None:
        with _calling(f"cannot tag {image[:19]} as {repository}:{tag}"):
            self.api.tag(image, repository, tag, force=True)

    def untag(self, reference: str) -> None:
        """Remove one tag; the image stays while other tags or child layers use it."""
        try:
            self.api.remove_image(reference, force=False, noprune=True)
        except _SDK_ERRORS as exc:
            if _status(exc) not in (404, 409):
                log.warn(f"could not remove the tag {reference}: {_short(exc)}")

    def remove_image(self, reference: str) -> None:
        try:
            self.api.remove_image(reference, force=True, noprune=False)
        except _SDK_ERRORS as exc:
            if _status(exc) != 404:
                raise DockerError(f"cannot remove {reference}: {_short(exc)}", "remove it by hand") from exc

    # -- build ----------------------------------------------------------------------
    def build(
        self,
        context: Path,
        tag: str,
        *,
        nocache: bool = False,
        platform: str | None = None,
        target: str | None = None,
        network_mode: str | None = None,
        cache_from: list[str] | None = None,
        on_output: Callable[[str], None] = log.stream,
    ) -> str:
        """Build from a prepared context tar; return the image id. The daemon's output
        goes to ``on_output`` (the log file, and the terminal with ``-v``); each step is
        one line with its time. ``network_mode="none"`` runs every step without a network;
        ``cache_from`` limits the layer cache to those images' layers (the classic
        builder's rule)."""
        step = "(before the first step)"
        image_id: str | None = None
        last_lines: list[str] = []
        steps = _StepClock()
        try:
            with context.open("rb") as handle:
                stream: Iterable[dict[str, Any]] = self.api.build(
                    fileobj=handle,
                    custom_context=True,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    pull=False,
                    nocache=nocache,
                    decode=True,
                    platform=platform,
                    target=target,
                    network_mode=network_mode,
                    cache_from=cache_from,
                )
                for event in stream:
                    if "stream" in event:
                        text = str(event["stream"])
                        for line in log.clean(text).rstrip("\n").splitlines():
                            match = _STEP_RE.match(line.strip())
                            if match:
                                step = f"step {match[1]} ({match[2][:120]})"
                                steps.begin(step)
                            last_lines = [*last_lines, line][-40:]
                        on_output(text)
                    elif "error" in event:
                        steps.end(failed=True)
                        detail = redact(str(event.get("errorDetail", {}).get("message") or event["error"]))
                        tail = "\n".join(last_lines)
                        if tail:
                            log.detail("\n".join(last_lines[-8:]))
                        last = detail.strip().splitlines()[-1] if detail.strip() else "unknown error"
                        # The hint reads the step's own output too: apt prints why it failed there.
                        raise DockerError(f"image build failed at {step}: {last}", _build_hint(detail + "\n" + tail))
                    elif "aux" in event and "ID" in event["aux"]:
                        image_id = str(event["aux"]["ID"])
        except docker.errors.APIError as exc:
            steps.end(failed=True)
            raise DockerError(f"image build failed at {step}: {_short(exc)}", _build_hint(str(exc))) from exc
        except _SDK_ERRORS as exc:
            steps.end(failed=True)
            raise DockerError(
                f"lost the Docker daemon during the build at {step} ({_short(exc)})",
                "check that dockerd is running and has disk space, then run again",
            ) from exc
        steps.end()
        if image_id is None:
            inspected = self.image(tag)
            if inspected is None:
                raise DockerError(f"the build of {tag} reported no image", "check the daemon log")
            image_id = str(inspected["Id"])
        return image_id

    # -- push -----------------------------------------------------------------------
    def push(self, repository: str, tag: str, attempts: int = 3, backoff: float = 2.0) -> str:
        """Push one tag; return the manifest digest the registry reported.

        A registry that is down or drops the connection gets ``attempts`` tries with
        exponential backoff; a refusal (authentication, read-only, bad name) fails at once.
        """
        for attempt in range(1, attempts + 1):
            try:
                return self._push_once(repository, tag)
            except RegistryError as exc:
                if attempt == attempts or not _transient(exc.message):
                    raise
                delay = backoff * 2 ** (attempt - 1)
                log.info(
                    f"push of {repository}:{tag}: {exc.message[-160:]}; retry {attempt}/{attempts - 1} in {delay:.0f}s"
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _push_once(self, repository: str, tag: str) -> str:
        digest: str | None = None
        try:
            for event in self.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    message = redact(str(event.get("errorDetail", {}).get("message") or event["error"]))
                    raise RegistryError(f"push of {repository}:{tag} failed: {message}", _push_hint(message))
                aux = event.get("aux") or {}
                if "Digest" in aux:
                    digest = str(aux["Digest"])
        except docker.errors.APIError as exc:
            message = redact(_short(exc))
            raise RegistryError(f"push of {repository}:{tag} failed: {message}", _push_hint(message)) from exc
        except _SDK_ERRORS as exc:
            raise RegistryError(
                f"push of {repository}:{tag} failed: {_short(exc)}", "check the daemon and the registry"
            ) from exc
        if digest is None:
            raise RegistryError(f"push of {repository}:{tag} reported no digest", "check the registry")
        return digest

    def registry_digest(self, reference: str) -> str | None:
        """The manifest digest a registry serves for a reference (None if absent)."""
        try:
            data = self.api.inspect_distribution(reference)
        except _SDK_ERRORS:
            return None
        descriptor = data.get("Descriptor", {})
        return str(descriptor["digest"]) if "digest" in descriptor else None

    def push_manifest_list(self, name: str, entries: list[str]) -> str:
        """Create the manifest list ``name`` over ``entries`` (repo@digest) and push it.

        Uses the Docker CLI's maintained ``docker manifest`` (it speaks the registry API with
        the same credentials as ``docker push``); returns the list's digest.
        """
        cli = shutil.which("docker")
        if cli is None:
            raise DockerError("the docker CLI is needed for manifest lists", "install the docker CLI (docker.io)")
        host = name.split("/", 1)[0]
        insecure = ["--insecure"] if self._insecure(host) else []
        env = dict(os.environ, DOCKER_CLI_EXPERIMENTAL="enabled")
        create = subprocess.run(
            [cli, "manifest", "create", *insecure, "--amend", name, *entries], capture_output=True, text=True, env=env
        )
        if create.returncode != 0:
            raise RegistryError(
                f"cannot create manifest list {name}: {redact(create.stderr.strip())[-300:]}", _push_hint(create.stderr)
            )
        push = subprocess.run(
            [cli, "manifest", "push", *insecure, "--purge", name], capture_output=True, text=True, env=env
        )
        match = re.search(r"sha256:[0-9a-f]{64}", push.stdout)
        if push.returncode != 0 or not match:
            raise RegistryError(
                f"cannot push manifest list {name}: {redact(push.stderr.strip())[-300:]}", _push_hint(push.stderr)
            )
        return match[0]

    def _insecure(self, host: str) -> bool:
        if host.startswith(("127.", "localhost", "[::1]")):
            return True
        configs = self.info().get("RegistryConfig", {}).get("IndexConfigs", {})
        return configs.get(host, {}).get("Secure") is False

    # -- containers -----------------------------------------------------------------
    def create(
        self,
        image: str,
        command: list[str],
        *,
        entrypoint: list[str] | None = None,
        privileged: bool = False,
        cap_add: list[str] | None = None,
        network_mode: str | None = None,
        pid_mode: str | None = None,
        binds: dict[str, str] | None = None,  # host path or named volume -> "container path[:ro]"
        labels: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        name: str | None = None,
    ) -> Container:
        """A created (not started) container; ``with`` it so that it is removed."""
        mounts = {}
        for host, target in (binds or {}).items():
            path, _, mode = target.partition(":")
            mounts[host] = {"bind": path, "mode": mode or "rw"}
        with _calling(f"cannot create a container of {image}", "check the image and the daemon"):
            host_config = self.api.create_host_config(
                privileged=privileged,
                cap_add=cap_add,
                network_mode=network_mode,
                pid_mode=pid_mode,
                binds=mounts or None,
            )
            created = self.api.create_container(
                image,
                command=command,
                entrypoint=entrypoint,
                host_config=host_config,
                labels=labels or {"io.github.kube-router-sctp.role": "check"},
                environment=environment,
                volumes=[m["bind"] for m in mounts.values()] or None,
                name=name,
            )
        return Container(self, str(created["Id"]), image)

    def container(self, container_id: str) -> Container:
        """An existing container by id (for the long-lived ones of the dataplane node)."""
        return Container(self, container_id)

    def extract(self, image: str, path: str, dest: Path) -> None:
        """Copy ``path`` out of ``image`` into ``dest`` (a container is created, never started)."""
        with self.create(image, ["true"], labels={"io.github.kube-router-sctp.role": "extract"}) as box:
            box.copy_out(path, dest)

    def export(self, image: str, dest: Path) -> None:
        """Write ``image``'s whole file system as a tar to ``dest``, as it is (owners, modes,
        device files kept): a container is created, exported and removed, never started."""
        if self.image(image) is None:
            raise DockerError(f"{image} is not on {self.describe()}", "build or pull the image first")
        with self.create(image, ["/bin/true"], labels={"io.github.kube-router-sctp.role": "export"}) as box:
            box.export(dest)

    def run(
        self,
        image: str,
        command: list[str],
        *,
        timeout: int = 300,
        volumes: dict[str, str] | None = None,
        files: tuple[Path, str] | None = None,
        collect: tuple[str, Path] | None = None,
        **create: Any,
    ) -> RunResult:
        """Run a container to completion and remove it, whatever happens.

        ``create`` takes ``create``'s options (entrypoint, privileged, labels…);
        ``volumes`` maps named volumes to mount points (caches kept between runs);
        ``files`` is (tar file, directory): unpacked into the container before it starts,
        which works with remote daemons too, unlike bind mounts. ``collect`` is (path in
        the container, tar file): after a successful run, that path is written as a tar
        archive to the file (the caller extracts it, checking every member).
        """
        with self.create(image, command, binds=volumes, **create) as box:
            if files is not None:
                box.put_archive(files[1], files[0])
            box.start()
            code = box.wait(timeout)
            if collect is not None and code == 0:
                box.save_archive(*collect)
            return RunResult(code, box.logs())

    # -- long-lived containers (the dataplane node's toolbox and kube-router) -------------
    def start(self, image: str, command: list[str], *, files: dict[str, str] | None = None, **create: Any) -> str:
        """Create and start a container that keeps running; return its id. ``files`` (path
        in the container -> text) are written before it starts; ``create`` takes
        ``create``'s options. It lives as long as the daemon it runs on (the dataplane
        node, thrown away after each run); removed here only when it cannot be started."""
        box = self.create(image, command, **create)
        try:
            for path, text in (files or {}).items():
                box.put_file(path, text)
            box.start()
        except BaseException:
            box.remove()
            raise
        return box.id

    def exec(self, container: str, command: list[str]) -> RunResult:
        """Run a command in a running container; its exit status and output."""
        return self.container(container).exec(command)

    def put_file(self, container: str, path: str, text: str) -> None:
        self.container(container).put_file(path, text)

    def pid(self, container: str) -> int:
        return self.container(container).pid()

    def running(self, container: str) -> bool:
        return self.container(container).running()

    def logs(self, container: str) -> str:
        return self.container(container).logs()

    def remove(self, container: str) -> None:
        self.container(container).remove()

    def copy_image_to(self, target: Engine, image: str) -> str:
        """Copy ``image`` to another daemon (save streamed into load), no registry needed;
        return the image id, checked against the id the load reports.

        The load's own report is the evidence: an image saved by digest (``repo@sha256:…``,
        as a build report names it) arrives with no name at all, so looking the reference
        up again on the target would find nothing."""
        wanted = self.image(image)
        if wanted is None:
            raise DockerError(f"{image} is not on {self.describe()}", "build it first (python build.py build ...)")
        wanted_id = str(wanted["Id"])
        with _calling(f"copying {image} to {target.describe()} failed", "check both daemons and their disk space"):
            stream = self.api.get_image(image, chunk_size=1 << 20)
            events = list(target.api.load_image(stream) or ())
        errors = [str(e["error"]) for e in events if isinstance(e, dict) and "error" in e]
        if errors:
            raise DockerError(
                f"{target.describe()} could not load {image}: {redact(errors[0])}", "see that daemon's log"
            )
        said = " ".join(str(e.get("stream", "")) for e in events if isinstance(e, dict))
        loaded = set(_LOADED_ID_RE.findall(said))
        for name in _LOADED_NAME_RE.findall(said):
            found = target.image(name)
            if found is not None:
                loaded.add(str(found["Id"]))
        if wanted_id not in loaded:
            shown = ", ".join(sorted(loaded)) or "nothing it named"
            raise DockerError(
                f"{target.describe()} loaded {shown} from {image}, not its image {wanted_id}",
                "the image changed on the building daemon while it was copied, or the daemons "
                "disagree on its format; inspect both with docker image inspect",
            )
        return wanted_id

    def images(self, label: str) -> list[dict[str, Any]]:
        """Local images carrying ``label``, newest first."""
        with _calling(f"cannot list the images of {self.describe()}"):
            found: list[dict[str, Any]] = self.api.images(filters={"label": label})
        return sorted(found, key=lambda item: item.get("Created", 0), reverse=True)

    def image_ids(self, dangling: bool = False) -> set[str]:
        """Ids of the daemon's images; ``dangling``: only untagged ones (what a --no-cache
        build leaves behind: its stages)."""
        with _calling(f"cannot list the images of {self.describe()}"):
            found: list[str] = self.api.images(filters={"dangling": True} if dangling else None, quiet=True)
        return set(found)

    def remove_unused(self, image_ids: Iterable[str]) -> int:
        """Remove these images where nothing uses them (no force); return how many went."""
        removed = 0
        for image_id in image_ids:
            try:
                self.api.remove_image(image_id, force=False, noprune=False)
                removed += 1
            except _SDK_ERRORS as exc:
                if _status(exc) not in (404, 409):  # gone already, or a child/container uses it
                    raise DockerError(f"cannot remove {image_id[:19]}: {_short(exc)}", "remove it by hand") from exc
        return removed

    def remove_volume(self, name: str) -> None:
        """Remove a named volume (a cache of ours); gone already is fine."""
        try:
            self.api.remove_volume(name, force=True)
        except _SDK_ERRORS as exc:
            if _status(exc) != 404:
                raise DockerError(f"cannot remove volume {name}: {_short(exc)}", "remove it by hand") from exc

    def containers(self, label: str) -> list[dict[str, Any]]:
        with _calling(f"cannot list the containers of {self.describe()}"):
            result: list[dict[str, Any]] = self.api.containers(all=True, filters={"label": label})
        return result


class _StepClock:
    """One line per Docker build step, with the time it took (the log file has its output)."""

    def __init__(self) -> None:
        self.step: str | None = None
        self.started = 0.0

    def begin(self, step: str) -> None:
        self.end()
        self.step = step
        self.started = time.monotonic()

    def end(self, failed: bool = False) -> None:
        if self.step is not None:
            took = time.monotonic() - self.started
            log.info(f"{self.step} {'FAILED after' if failed else 'in'} {took:.1f}s")
        self.step = None


def _split_tag(reference: str) -> tuple[str, str, str]:
    name, sep, tag = reference.rpartition(":")
    if sep and "/" not in tag:
        return name, ":", tag
    return reference, "", "latest"


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip().splitlines()
    return redact(text[-1] if text else type(exc).__name__)[:300]


_CERTIFICATE_TROUBLE = (
    "x509:",
    "certificate signed by unknown authority",
    "certificate verification failed",
    "certificate verify failed",
    "server certificate verification failed",
)


def _build_hint(detail: str) -> str:
    lowered = detail.lower()
    if any(word in lowered for word in _CERTIFICATE_TROUBLE):
        return (
            "a builder stage could not verify a TLS certificate: point --ca-bundle (mirrors.ca-bundle, "
            "KUBE_ROUTER_SCTP_CA_BUNDLE) at the CA bundle that signs your mirror or proxy (default: the "
            "host's trust store)"
        )
    if "no space left" in lowered:
        return "the daemon's disk is full: free space (docker system prune) and run again"
    if "pull access denied" in lowered or "manifest unknown" in lowered or "not found" in lowered:
        return "a base image is missing: load it, configure a registry mirror, or use --bootstrap-bases"
    mirror_trouble = (
        "temporary failure resolving",
        "could not resolve",
        "failed to fetch",
        "unable to connect",
        "unable to locate package",
    )
    if any(word in lowered for word in mirror_trouble):
        return "a builder stage could not reach a package mirror: set --debian-mirror / --go-proxy"
    return "see the build output above for the failing command"


_TRANSIENT = (
    "connection refused",
    "connection reset",
    "eof",
    "i/o timeout",
    "broken pipe",
    "502",
    "503",
    "504",
    "500 internal",
    "timeout",
    "no route to host",
    "tls handshake timeout",
)


def _transient(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in _TRANSIENT)


def _push_hint(message: str) -> str:
    lowered = message.lower()
    if any(word in lowered for word in ("unauthorized", "authentication required", "denied", "no basic auth")):
        return "log in to the registry (docker login REGISTRY) with an account allowed to push"
    if "connection refused" in lowered or "no such host" in lowered or "i/o timeout" in lowered:
        return "start the registry or fix the --push address"
    if "http response to https client" in lowered or "certificate" in lowered:
        return "configure TLS for the registry or list it under the daemon's insecure-registries"
    return "check the registry's log"
