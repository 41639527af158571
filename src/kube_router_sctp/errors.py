"""Typed failures: each carries an exit code and the fix the user should apply.

Every failure the pipeline expects is one of these; the CLI prints it as one line,
``problem — fix``, and exits with its code. Anything else is a bug and gets a traceback.
Each exit code means one thing and is declared here only: :func:`exit_codes` is the
table that docs/reliability.md shows (``scripts/gendocs.py`` writes it, a unit test
checks it).
"""

from __future__ import annotations


class PipelineError(Exception):
    """A local failure of no more specific kind: a file that could not be read or written."""

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
    """Bad configuration, option or input value (click's usage errors too); nothing was done."""

    exit_code = 2
    kind = "config"


class FetchError(PipelineError):
    """A source could not be obtained (unreachable, not found, offline without cache)."""

    exit_code = 3
    kind = "fetch"


class VerificationError(PipelineError):
    """Something obtained did not match its pin (checksum, commit, tree digest, a moved tag)."""

    exit_code = 4
    kind = "verify"


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


class KernelUnsupportedError(SmokeError):
    """The kernel lacks an option SCTP through IPVS needs, read from its own config: a
    verdict on the kernel, not on the image (which would be exit 8)."""

    exit_code = 14
    kind = "kernel"


class DataplaneError(PipelineError):
    """The dataplane proof failed or could not run."""

    exit_code = 9
    kind = "dataplane"


class VMError(PipelineError):
    """A QEMU guest could not be prepared, booted or reached."""

    exit_code = 10
    kind = "vm"


class UnsafeSourceError(PipelineError):
    """A source archive or tree tried to escape its directory or carried special files."""

    exit_code = 11
    kind = "unsafe-source"


class PatchCheckFailed(PipelineError):
    """check-patches found a release whose series does not vet, build or pass its tests."""

    exit_code = 12
    kind = "check-patches"


class DoctorFindings(PipelineError):
    """doctor found a check that failed (the lines marked FAIL say what to fix)."""

    exit_code = 13
    kind = "doctor"


class Interrupted(PipelineError):
    """The user interrupted the run (Ctrl-C, SIGTERM); everything half-done was cleaned up."""

    exit_code = 130
    kind = "interrupted"


def _classes() -> list[type[PipelineError]]:
    found: list[type[PipelineError]] = [PipelineError]
    for cls in found:
        found.extend(c for c in cls.__subclasses__() if c.__module__ == __name__ and c not in found)
    return found


def exit_codes() -> list[tuple[int, str, str]]:
    """(code, class name, meaning) for every exit status the tool uses, 0 included."""
    rows = [(0, "—", "Success.")]
    for cls in _classes():
        doc = " ".join((cls.__doc__ or "").split())
        rows.append((cls.exit_code, cls.__name__, doc))
    return sorted(rows)


def exit_code_table() -> str:
    """The markdown table of :func:`exit_codes` that docs/reliability.md carries."""
    lines = ["| exit | error | meaning |", "| --- | --- | --- |"]
    lines += [
        f"| {code} | `{name}` | {meaning} |" if name != "—" else f"| {code} | — | {meaning} |"
        for code, name, meaning in exit_codes()
    ]
    return "\n".join(lines)
