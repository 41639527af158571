"""The one place that talks to Docker (the Engine API through the docker SDK).

Builds and pushes are streamed with the low-level client, because the high-level one
returns only at the end and reports push failures inside an HTTP 200 stream. Every
failure becomes a DockerError or RegistryError that names the step and the fix.
Registry credentials come from the Docker config the SDK reads; they are never logged.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from . import log
from .errors import DockerError, RegistryError

_STEP_RE = re.compile(r"^Step (\d+/\d+) : (.*)$")
_SECRET_RE = re.compile(r"(?i)(authorization|password|token|auth)(\"?\s*[=:]\s*\"?(?:basic |bearer )?)[^\s\"',}]+")


def redact(text: str) -> str:
    """Hide anything that looks like a credential before it reaches output."""
    return _SECRET_RE.sub(r"\1\2***", text)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str


class Engine:
    def __init__(self, base_url: str | None = None, timeout: int = 600) -> None:
        self.base_url = base_url
        try:
            if base_url:
                self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
            else:
                self.api = docker.from_env(version="auto", timeout=timeout).api
            self.api.ping()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            where = base_url or "the local socket (DOCKER_HOST unset)"
            raise DockerError(
                f"the Docker daemon at {where} is not reachable ({_short(exc)})",
                "start dockerd, or point DOCKER_HOST / --docker-host at a running daemon",
            ) from exc

    def describe(self) -> str:
        return self.base_url or "local Docker daemon"

    def version(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api.version()
        return result

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api.info()
        return result

    # -- images ---------------------------------------------------------------------
    def image(self, reference: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.api.inspect_image(reference)
            return result
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise DockerError(f"cannot inspect {reference}: {_short(exc)}", "check the daemon") from exc

    def pull(self, reference: str, platform: str | None = None) -> None:
        repository, _, tag = reference.partition("@") if "@" in reference else _split_tag(reference)
        try:
            stream = self.api.pull(repository, tag=tag or None, stream=True, decode=True, platform=platform)
            for event in stream:
                if "error" in event:
                    raise RegistryError(
                        f"cannot pull {reference}: {redact(str(event['error']))}",
                        "check the reference, the registry and your credentials",
                    )
        except docker.errors.APIError as exc:
            raise RegistryError(
                f"cannot pull {reference}: {_short(exc)}", "check the reference and the registry"
            ) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"cannot pull {reference}: {_short(exc)}", "check the daemon") from exc

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.api.tag(image, repository, tag, force=True)

    def remove_image(self, reference: str) -> None:
        try:
            self.api.remove_image(reference, force=True, noprune=False)
        except docker.errors.APIError as exc:
            if exc.status_code != 404:
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
        on_output: Callable[[str], None] = log.detail,
    ) -> str:
        """Build from a prepared context tar; return the image id. Output streams live."""
        step = "(before the first step)"
        image_id: str | None = None
        last_lines: list[str] = []
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
                )
                for event in stream:
                    if "stream" in event:
                        text = str(event["stream"])
                        for line in text.rstrip("\n").splitlines():
                            match = _STEP_RE.match(line.strip())
                            if match:
                                step = f"step {match[1]} ({match[2][:120]})"
                            last_lines = [*last_lines, line][-40:]
                        on_output(text)
                    elif "error" in event:
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
            raise DockerError(f"image build failed at {step}: {_short(exc)}", _build_hint(str(exc))) from exc
        except requests.RequestException as exc:
            raise DockerError(
                f"lost the Docker daemon during the build at {step} ({_short(exc)})",
                "check that dockerd is running and has disk space, then run again",
            ) from exc
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
        except requests.RequestException as exc:
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
        except docker.errors.APIError:
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

    def extract(self, image: str, path: str, dest: Path) -> None:
        """Copy ``path`` out of ``image`` into ``dest`` (a container is created, never started)."""
        container = self.api.create_container(
            image, command=["true"], labels={"io.github.kube-router-sctp.role": "extract"}
        )
        try:
            stream, _ = self.api.get_archive(container["Id"], path)
            archive = dest / ".extract.tar"
            with archive.open("wb") as handle:
                for chunk in stream:
                    handle.write(chunk)
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
            archive.unlink()
        finally:
            self.api.remove_container(container["Id"], force=True)

    def export(self, image: str, dest: Path) -> None:
        """Write ``image``'s whole file system as a tar to ``dest``, as it is (owners, modes,
        device files kept): a container is created, exported and removed, never started."""
        try:
            container = self.api.create_container(
                image, command=["/bin/true"], labels={"io.github.kube-router-sctp.role": "export"}
            )
        except docker.errors.ImageNotFound as exc:
            raise DockerError(f"{image} is not on {self.describe()}", "build or pull the image first") from exc
        except docker.errors.APIError as exc:
            raise DockerError(f"cannot create a container of {image}: {_short(exc)}", "check the daemon") from exc
        try:
            with dest.open("wb") as handle:
                for chunk in self.api.export(container["Id"]):
                    handle.write(chunk)
        except docker.errors.APIError as exc:
            raise DockerError(f"cannot export {image}: {_short(exc)}", "check the daemon's disk space") from exc
        finally:
            try:
                self.api.remove_container(container["Id"], force=True)
            except docker.errors.APIError:
                log.warn(f"could not remove export container {container['Id'][:12]}")

    # -- containers -----------------------------------------------------------------
    def run(
        self,
        image: str,
        command: list[str],
        *,
        entrypoint: list[str] | None = None,
        privileged: bool = False,
        cap_add: list[str] | None = None,
        network_mode: str | None = None,
        timeout: int = 300,
        labels: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        volumes: dict[str, str] | None = None,
        files: tuple[Path, str] | None = None,
    ) -> RunResult:
        """Run a container to completion and remove it, whatever happens.

        ``volumes`` maps named volumes to mount points (caches kept between runs);
        ``files`` is (tar file, directory): unpacked into the container before it starts,
        which works with remote daemons too, unlike bind mounts.
        """
        binds = {name: {"bind": target, "mode": "rw"} for name, target in (volumes or {}).items()}
        host_config = self.api.create_host_config(
            privileged=privileged, cap_add=cap_add, network_mode=network_mode, binds=binds or None
        )
        container = self.api.create_container(
            image,
            command=command,
            entrypoint=entrypoint,
            host_config=host_config,
            labels=labels or {"io.github.kube-router-sctp.role": "check"},
            environment=environment,
            volumes=list((volumes or {}).values()) or None,
        )
        cid = container["Id"]
        try:
            if files is not None:
                tarball, directory = files
                with tarball.open("rb") as handle:
                    self.api.put_archive(cid, directory, handle)
            try:
                self.api.start(cid)
            except docker.errors.APIError as exc:
                raise DockerError(f"cannot start a container of {image}: {_short(exc)}", "check the daemon") from exc
            status = self.api.wait(cid, timeout=timeout)
            output = self.api.logs(cid, stdout=True, stderr=True).decode(errors="replace")
            return RunResult(int(status.get("StatusCode", -1)), output)
        finally:
            try:
                self.api.remove_container(cid, force=True)
            except docker.errors.APIError:
                log.warn(f"could not remove container {cid[:12]}")

    # -- long-lived containers (the dataplane node's toolbox and kube-router) -------------
    def start(
        self,
        image: str,
        command: list[str],
        *,
        entrypoint: list[str] | None = None,
        privileged: bool = False,
        network_mode: str | None = None,
        pid_mode: str | None = None,
        binds: dict[str, str] | None = None,  # host path -> "container path[:ro]"
        labels: dict[str, str] | None = None,
        name: str | None = None,
        files: dict[str, str] | None = None,  # path in the container -> text, written before start
    ) -> str:
        """Create and start a container that keeps running; return its id."""
        mounts = {}
        for host, target in (binds or {}).items():
            path, _, mode = target.partition(":")
            mounts[host] = {"bind": path, "mode": mode or "rw"}
        try:
            host_config = self.api.create_host_config(
                privileged=privileged, network_mode=network_mode, pid_mode=pid_mode, binds=mounts or None
            )
            created = self.api.create_container(
                image, command=command, entrypoint=entrypoint, host_config=host_config, labels=labels, name=name
            )
            cid = str(created["Id"])
            for path, text in (files or {}).items():
                self.put_file(cid, path, text)
            self.api.start(cid)
        except docker.errors.APIError as exc:
            raise DockerError(f"cannot start a container of {image}: {_short(exc)}", "check the daemon") from exc
        return cid

    def exec(self, container: str, command: list[str]) -> RunResult:
        """Run a command in a running container; its exit status and output."""
        try:
            run = self.api.exec_create(container, command)
            output = self.api.exec_start(run["Id"]).decode(errors="replace")
            code = self.api.exec_inspect(run["Id"]).get("ExitCode")
        except docker.errors.APIError as exc:
            raise DockerError(f"cannot exec in {container[:12]}: {_short(exc)}", "check the container") from exc
        return RunResult(int(code) if code is not None else -1, output)

    def put_file(self, container: str, path: str, text: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            archive.addfile(info, io.BytesIO(data))
        self.api.put_archive(container, "/", buffer.getvalue())

    def running(self, container: str) -> bool:
        return bool(self.api.inspect_container(container)["State"].get("Running"))

    def logs(self, container: str) -> str:
        return str(self.api.logs(container).decode(errors="replace"))

    def remove(self, container: str) -> None:
        try:
            self.api.remove_container(container, force=True)
        except docker.errors.APIError as exc:
            if exc.status_code != 404:
                log.warn(f"could not remove container {container[:12]}: {_short(exc)}")

    def copy_image_to(self, target: Engine, image: str) -> str:
        """Copy ``image`` to another daemon (save streamed into load), no registry needed;
        return the image id, checked to be the same on both sides."""
        wanted = self.image(image)
        if wanted is None:
            raise DockerError(f"{image} is not on {self.describe()}", "build it first (python build.py build ...)")
        try:
            stream = self.api.get_image(image, chunk_size=1 << 20)
            events = list(target.api.load_image(stream) or ())
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise DockerError(f"copying {image} to {target.describe()} failed ({_short(exc)})", "run again") from exc
        errors = [str(e["error"]) for e in events if isinstance(e, dict) and "error" in e]
        if errors:
            raise DockerError(f"{target.describe()} could not load {image}: {errors[0]}", "see its log")
        loaded = target.image(image)
        if loaded is None or loaded["Id"] != wanted["Id"]:
            raise DockerError(f"{target.describe()} holds a different {image} than {self.describe()}", "run again")
        return str(wanted["Id"])

    def images(self, label: str) -> list[dict[str, Any]]:
        """Local images carrying ``label``, newest first."""
        found: list[dict[str, Any]] = self.api.images(filters={"label": label})
        return sorted(found, key=lambda item: item.get("Created", 0), reverse=True)

    def image_ids(self, dangling: bool = False) -> set[str]:
        """Ids of the daemon's images; ``dangling``: only untagged ones (what a --no-cache
        build leaves behind: its stages)."""
        found: list[str] = self.api.images(filters={"dangling": True} if dangling else None, quiet=True)
        return set(found)

    def remove_unused(self, image_ids: Iterable[str]) -> int:
        """Remove these images where nothing uses them (no force); return how many went."""
        removed = 0
        for image_id in image_ids:
            try:
                self.api.remove_image(image_id, force=False, noprune=False)
                removed += 1
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # gone already, or a child/container uses it
                    raise DockerError(f"cannot remove {image_id[:19]}: {_short(exc)}", "remove it by hand") from exc
        return removed

    def containers(self, label: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api.containers(all=True, filters={"label": label})
        return result


def _split_tag(reference: str) -> tuple[str, str, str]:
    name, sep, tag = reference.rpartition(":")
    if sep and "/" not in tag:
        return name, ":", tag
    return reference, "", "latest"


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip().splitlines()
    return redact(text[-1] if text else type(exc).__name__)[:300]


def _build_hint(detail: str) -> str:
    lowered = detail.lower()
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
