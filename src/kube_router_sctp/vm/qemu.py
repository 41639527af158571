"""The one place that talks to QEMU: command line, process, console, status port, time-outs.

A guest gets two ports, both files on the host: the console (kernel messages and the
guest's output, shown as evidence) and a status port that carries what the guest's init
reports (an exit status, readiness), so callers read a value, not a scraped log. On x86
they are ``ttyS0`` and ``ttyS1``; the arm64 ``virt`` machine has one UART, so there the
console is ``ttyAMA0`` and the status port a virtio serial port (``/dev/vport*p1``, which
needs the virtio_pci and virtio_console modules; :data:`ARCHES` says so).
``-no-reboot`` with ``panic=-1`` makes a crashed guest end the QEMU process at once
instead of hanging until a time-out. Acceleration is TCG: KVM may be absent or unusable,
and TCG behaves the same everywhere.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .. import log
from ..errors import VMError

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Arch:
    """How QEMU boots one guest architecture (``uname -m`` names)."""

    name: str
    platform: str  # the OCI platform of images that run on it
    binary: str
    package: str  # the Debian package that has ``binary``
    machine: tuple[str, ...]  # -M/-cpu arguments
    console: str  # the kernel's console= device
    status_device: str  # the status port as the guest sees it (a shell glob)
    status_modules: tuple[str, ...]  # modules the guest needs before it can write there


ARCHES = {
    "x86_64": Arch(
        "x86_64", "linux/amd64", "qemu-system-x86_64", "qemu-system-x86", ("-cpu", "max"), "ttyS0", "/dev/ttyS1", ()
    ),
    # cortex-a57: what Debian's arm64 kernel targets; "max" adds pointer authentication,
    # which TCG emulates slowly.
    "aarch64": Arch(
        "aarch64",
        "linux/arm64",
        "qemu-system-aarch64",
        "qemu-system-arm",
        ("-M", "virt", "-cpu", "cortex-a57"),
        "ttyAMA0",
        "/dev/vport*p1",
        ("virtio_pci", "virtio_console"),
    ),
}


def arch_of_platform(platform: str) -> Arch:
    for arch in ARCHES.values():
        if arch.platform == platform:
            return arch
    raise VMError(
        f"no QEMU guest architecture for {platform}", f"use one of {', '.join(a.platform for a in ARCHES.values())}"
    )


# Console lines that mean the guest will never get anywhere: stop waiting and say so.
_STALL_RE = re.compile(
    r"(rcu: INFO: rcu_\w+ (?:self-)?detected stalls?|rcu_\w+ self-detected stall|watchdog: BUG: soft lockup)"
)
_PANIC_RE = re.compile(r"Kernel panic - not syncing:?(.*)")
_CONSOLE_OVERLAP = 512  # longer than any line the two patterns above need


def qemu_binary(arch: str = "x86_64") -> str:
    spec = ARCHES[arch]
    path = shutil.which(spec.binary)
    if path is None:
        raise VMError(
            f"{spec.binary} is not installed",
            f"apt-get install {spec.package} (or pass --smoke-host for a Docker host)",
        )
    return path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (QEMU binds it a moment later;
    callers retry on the rare collision)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGTERM when the parent exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still ends QEMU on every normal path


# Built-in initcalls every guest skips (``initcall_blacklist``; a name a kernel lacks is
# ignored). Both only test or register kernel-keyring crypto that no guest here uses, and
# under TCG they were 4.0 s of a 6.12 kernel's boot (initcall_debug, 2026-11-30): the SP
# 800-108 KDF's self-test (crypto_kdf108_init, 2.8 s) and the "encrypted" key type
# (init_encrypted, 1.2 s). ``cryptomgr.notests`` does not reach the first.
SKIPPED_INITCALLS = ("crypto_kdf108_init", "init_encrypted")


@dataclass(frozen=True)
class Machine:
    """What to boot. ``forwards`` maps host loopback ports to guest TCP ports (user-mode
    networking, in which the guest reaches the host's 127.0.0.1 as 10.0.2.2)."""

    kernel: Path
    append: str
    initrd: Path | None = None
    memory_mb: int = 1024
    cpus: int = 1
    disks: tuple[Path, ...] = ()  # /dev/vda, /dev/vdb... in order, writable
    readonly_disks: tuple[Path, ...] = ()  # after the writable ones
    network: bool = False
    forwards: dict[int, int] = field(default_factory=dict)
    accel: str = "tcg"
    arch: str = "x86_64"


class Guest:
    """One QEMU process. Use as a context manager: the process never outlives it."""

    def __init__(self, machine: Machine, workdir: Path, name: str = "guest") -> None:
        self.machine = machine
        self.name = name
        self.workdir = workdir
        self.console_log = workdir / f"{name}.console.log"
        self.status_file = workdir / f"{name}.status"
        self.stderr_file = workdir / f"{name}.qemu.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        # check_alive runs every few hundred milliseconds for the life of a guest whose
        # console grows to megabytes: it reads only what is new since its last look,
        # keeping a short overlap so a line split across two reads still matches.
        self._console_seen = 0
        self._console_carry = ""
        self._stall: str | None = None
        self._panic: str | None = None

    # -- command line -----------------------------------------------------------------
    def command(self) -> list[str]:
        m = self.machine
        spec = ARCHES[m.arch]
        command = [
            qemu_binary(m.arch),
            "-accel",
            m.accel,
            *spec.machine,
            "-m",
            str(m.memory_mb),
            "-smp",
            str(m.cpus),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(m.kernel),
            "-append",
            f"{m.append} initcall_blacklist={','.join(SKIPPED_INITCALLS)}",
            "-chardev",
            f"file,id=console,path={self.console_log}",
            "-serial",
            "chardev:console",
            "-chardev",
            f"file,id=status,path={self.status_file}",
            *(
                ("-serial", "chardev:status")
                if spec.status_device == "/dev/ttyS1"
                else ("-device", "virtio-serial-pci", "-device", "virtserialport,chardev=status,name=krs.status")
            ),
            # Entropy from the host, so nothing in the guest waits for its pool to fill.
            "-device",
            "virtio-rng-pci",
        ]
        if m.initrd is not None:
            command += ["-initrd", str(m.initrd)]
        for disk in m.disks:
            # cache=unsafe: every disk is disposable (a copy or an overlay), so host flushes buy nothing.
            fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
            command += ["-drive", f"file={disk},format={fmt},if=virtio,cache=unsafe,discard=unmap"]
        for disk in m.readonly_disks:
            command += ["-drive", f"file={disk},format=raw,if=virtio,readonly=on"]
        if m.network or m.forwards:
            rules = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in m.forwards.items())
            command += ["-netdev", f"user,id=n0{rules}", "-device", "virtio-net-pci,netdev=n0"]
        return command

    # -- process ----------------------------------------------------------------------
    def start(self) -> None:
        if self._process is not None:
            raise VMError(f"{self.name} is already running", "stop it first")
        for path in (self.console_log, self.status_file):
            path.write_bytes(b"")
        self._console_seen, self._console_carry, self._stall, self._panic = 0, "", None, None
        command = self.command()
        log.info(f"{self.name}: {' '.join(command)}")
        with self.stderr_file.open("wb") as stderr:
            # Own session: a terminal's Ctrl-C reaches Python, which stops QEMU in order.
            # Death signal: if Python itself is killed, QEMU goes too instead of lingering.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def wait(self, timeout: float, what: str = "finish") -> int:
        """Wait for QEMU to exit (the guest powered off or crashed); return its status."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(what, allow_exit=True)
            if self._process is not None and self._process.poll() is not None:
                return int(self._process.returncode)
            if time.monotonic() > deadline:
                self.stop()
                raise VMError(
                    f"{self.name} did not {what} within {timeout:.0f}s (console ends: {self.console_tail(1)})",
                    "the host may be overloaded (TCG emulation is slow): retry, or raise the time-out",
                )
            time.sleep(0.2)

    def check_alive(self, what: str, *, allow_exit: bool = False) -> None:
        """Raise VMError when QEMU died, or the guest panicked or stalled."""
        self._scan_console()
        if self._stall is not None:
            self.stop()
            raise VMError(
                f"{self.name} stalled before it could {what} (guest reports: {self._stall})",
                "boot again from a pristine disk; if it repeats, give the VM more memory or fewer busy neighbours",
            )
        if self._process is None:
            raise VMError(f"{self.name} was never started", "call start() first")
        code = self._process.poll()
        if code is None or allow_exit:
            return
        # QEMU is gone, so the console is final: one whole read settles a panic line
        # that the incremental scan saw only partly.
        panic = self._panic
        if panic is None and (final := _PANIC_RE.search(self.console())):
            panic = final[1].strip()
        if panic is not None:
            raise VMError(f"{self.name}'s kernel panicked: {panic}", "see the guest console above")
        said = self.qemu_error() or self.console_tail(1)
        raise VMError(
            f"QEMU exited with status {code} before {self.name} could {what} ({said})",
            "check the QEMU command line and the guest console",
        )

    def stop(self, grace: float = 5.0) -> None:
        """End QEMU: SIGTERM (QEMU quits cleanly), then SIGKILL after ``grace`` seconds."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)

    def __enter__(self) -> Guest:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- what the guest said ----------------------------------------------------------
    def _scan_console(self) -> None:
        """Look for a stall or a panic in what the console gained since the last look."""
        try:
            with self.console_log.open("rb") as console:
                console.seek(self._console_seen)
                new = console.read()
        except FileNotFoundError:
            return
        if not new:
            return
        self._console_seen += len(new)
        text = self._console_carry + new.decode(errors="replace").replace("\r\n", "\n")
        if self._stall is None and (stall := _STALL_RE.search(text)):
            self._stall = stall[1]
        if self._panic is None and (panic := _PANIC_RE.search(text)) and "\n" in text[panic.end() :]:
            self._panic = panic[1].strip()
        self._console_carry = text[-_CONSOLE_OVERLAP:]

    def console(self) -> str:
        try:
            return self.console_log.read_bytes().decode(errors="replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return ""

    def console_tail(self, lines: int = 20) -> str:
        kept = [line for line in self.console().splitlines() if line.strip()]
        return "\n".join(kept[-lines:]) if kept else "(no console output)"

    def status(self) -> str:
        """Everything the guest wrote to its status port."""
        try:
            return self.status_file.read_bytes().decode(errors="replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def qemu_error(self) -> str:
        try:
            text = self.stderr_file.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""
        return text.splitlines()[-1] if text else ""
