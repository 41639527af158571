"""Typed failures: each carries an exit code and the fix the user should apply.

Every failure the pipeline expects is one of these; the CLI prints it as one line,
``problem — fix``, and exits with its code. Anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the pipeline understands. ``hint`` says what to do about it."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(f"{self.message}".split())
        if self.hint:
            text += " — " + " ".join(self.hint.split())
        return text


class ConfigError(PipelineError):
    """Bad configuration, option or input value; nothing was done."""

    exit_code = 2
    kind = "config"


class FetchError(PipelineError):
    """A source could not be obtained (unreachable, not found, offline without cache)."""

    exit_code = 3
    kind = "fetch"


class VerificationError(PipelineError):
    """Something obtained did not match its pin (checksum, commit, tree digest)."""

    exit_code = 4
    kind = "verify"


class UnsafeSourceError(PipelineError):
    """A source archive or tree tried to escape or carried special files."""

    exit_code = 4
    kind = "unsafe-source"


class PatchError(PipelineError):
    """A patch series did not apply strictly, or the series index is wrong."""

    exit_code = 5
    kind = "patch"


class DockerError(PipelineError):
    """The Docker daemon is unreachable or an image build failed."""

    exit_code = 6
    kind = "docker"


class RegistryError(PipelineError):
    """The registry refused a push, a pull or a login."""

    exit_code = 7
    kind = "registry"


class SmokeError(PipelineError):
    """The image failed its smoke test on an IPVS-capable kernel."""

    exit_code = 8
    kind = "smoke"

    def __init__(self, message: str, hint: str = "", smoke_class: int | None = None) -> None:
        super().__init__(message, hint)
        self.smoke_class = smoke_class  # the guest's or container's exit status (smoke.CLASSES)


class DataplaneError(PipelineError):
    """The dataplane proof failed or could not run."""

    exit_code = 9
    kind = "dataplane"


class VMError(PipelineError):
    """A QEMU guest could not be prepared, booted or reached."""

    exit_code = 10
    kind = "vm"


class Interrupted(PipelineError):
    """The user interrupted the run; everything half-done was cleaned up."""

    exit_code = 130
    kind = "interrupted"
