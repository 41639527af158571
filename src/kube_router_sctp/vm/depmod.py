"""depmod's index of a kernel's modules, for the Docker-host guest's modules disk.

That guest's own ``modprobe`` calls (the kernel's, Docker's, kube-router's) need depmod's
whole index: aliases, built-in names, symbols. depmod is a C program that parses every
module's ELF, and the modules are a package's bytes, hostile input: a red-team review
crashed the host's kmod 30 with heap corruption on fuzzed modules. So, run as root, the
tool runs depmod as if it were compromised, and lets nothing it writes reach the host
but regular files of the names depmod writes:

- depmod runs as ``nobody``, with no capabilities and no new privileges (``setpriv``),
  with limits on file size, processes and core dumps (``prlimit``), in a session of its
  own (no terminal to read or to push keystrokes into), with stdin from ``/dev/null``, a
  clean environment and ``/`` as its working directory;
- it runs under a root shell that is PID 1 of a PID namespace of its own with its own
  ``/proc`` (``unshare --pid --mount-proc``): it sees no host process, and when the shell
  ends, or the tool kills ``unshare`` (a time-out), everything in the namespace ends;
- in mount, network, IPC and UTS namespaces of its own, ``/tmp``, ``/var/tmp``,
  ``/dev/shm`` and ``/run`` are small tmpfs it cannot write; it sees the modules tree
  through an overlay whose upper layer is a 128 MiB tmpfs, so whatever it writes stays in
  memory and dies with the namespace. The host's tree is never writable to it;
- after it ends, the shell kills whatever it left running in the namespace, then copies
  out the index files, by fixed name and only regular files, into an empty directory of
  the tool's; the tool checks them (names, types,
  total size) and moves them into the release directory.

Run as another user, depmod runs as that user, plainly, over the tree itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import log
from ..errors import VMError

_NOBODY = 65534
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What depmod writes into the release directory (kmod 30-34); nothing else is taken.
INDEX_NAMES = (
    "modules.alias",
    "modules.alias.bin",
    "modules.builtin.alias.bin",
    "modules.builtin.bin",
    "modules.dep",
    "modules.dep.bin",
    "modules.devname",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.weakdep",
)
_REQUIRED = ("modules.dep", "modules.dep.bin")
_FILE_LIMIT = 16 << 20  # depmod's largest file for a whole Debian kernel is about 1 MiB
_SCRATCH = 128 << 20  # the tmpfs that takes everything depmod writes, and what may come back
_PROCESSES = 64
_DROP = f"--reuid={_NOBODY} --regid={_NOBODY} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all"
_LIMITS = f"--fsize={_FILE_LIMIT} --nproc={_PROCESSES} --core=0"
# $1 the tree, $2 an empty directory for the index, $3 depmod, $4 the release; everything
# else is fixed text. The directories are opened first and reached through their
# descriptors: the tmpfs mounts may hide where they live.
_SANDBOX = (
    "set -e; "
    'exec 3< "$1" 4< "$2"; '
    "for d in /var/tmp /dev/shm /run; do "
    '[ -d "$d" ] && mount -t tmpfs -o size=1m,mode=755 krs "$d" || [ ! -d "$d" ]; done; '
    f"mount -t tmpfs -o size={_SCRATCH},mode=755 krs /tmp; "
    # the layers under a directory only root may enter: depmod writes through the overlay alone
    'mkdir -p /tmp/modules; mkdir -m 700 /tmp/layers; mkdir -p /tmp/layers/work "/tmp/layers/upper/lib/modules/$4"; '
    f'chown {_NOBODY}:{_NOBODY} "/tmp/layers/upper/lib/modules/$4"; '
    "mount --bind /proc/self/fd/3 /tmp/modules; "
    "mount -t overlay krs -o lowerdir=/tmp/modules,upperdir=/tmp/layers/upper,workdir=/tmp/layers/work /tmp/modules; "
    "exec 3<&-; "
    "cd /; "
    f'setpriv {_DROP} -- prlimit {_LIMITS} -- "$3" -b /tmp/modules "$4" 4<&- </dev/null; '
    "kill -9 -1 2>/dev/null || true; "  # whatever depmod left running: nothing moves while we copy
    f"for name in {' '.join(INDEX_NAMES)}; do "
    'f="/tmp/layers/upper/lib/modules/$4/$name"; '
    'if [ -f "$f" ] && [ ! -L "$f" ]; then cat "$f" > "/proc/self/fd/4/$name"; fi; done'
)
_NAMESPACES = (
    *("--mount", "--propagation", "private"),
    *("--pid", "--fork", "--kill-child", "--mount-proc"),
    *("--net", "--ipc", "--uts"),
)


def run(base: Path, release: str, timeout: float = 600.0) -> None:
    """Write depmod's index into ``base/lib/modules/<release>``; raise VMError if depmod
    fails or writes no index."""
    depmod = shutil.which("depmod")
    if depmod is None:
        raise VMError("depmod is not installed", "apt-get install kmod")
    directory = base / "lib" / "modules" / release
    if os.geteuid() != 0:
        _execute([depmod, "-b", str(base), release], timeout)
        return
    tools = {tool: shutil.which(tool) for tool in ("unshare", "setpriv", "prlimit", "mount", "sh")}
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise VMError(f"{', '.join(missing)} not installed (depmod runs sandboxed)", "apt-get install util-linux mount")
    index = Path(tempfile.mkdtemp(prefix="depmod-index-", dir=base.parent))
    try:
        command = [str(tools["unshare"]), *_NAMESPACES, "--", str(tools["sh"]), "-c", _SANDBOX, "krs-depmod"]
        _execute([*command, str(base), str(index), depmod, release], timeout)
        _take(index, directory)
    finally:
        shutil.rmtree(index, ignore_errors=True)


def _execute(command: list[str], timeout: float) -> None:
    with tempfile.TemporaryFile() as output:
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={"PATH": _PATH, "LC_ALL": "C"},
                cwd="/",
                start_new_session=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise VMError(f"depmod did not finish within {timeout:.0f}s", "check the kernel package") from exc
        if result.returncode == 0:
            return
        output.seek(max(0, output.seek(0, os.SEEK_END) - 4096))
        lines = [line for line in output.read().decode(errors="replace").splitlines() if line.strip()]
        log.detail("\n".join(log.clean(line) for line in lines[-15:]))
        said = log.clean(lines[-1].strip()) if lines else "no output"
        hint = "see depmod's last lines above"
        if "unshare" in said and "not permitted" in said:
            hint = (
                "depmod runs in namespaces of its own: run the tool where root may make them"
                " (not in a container without CAP_SYS_ADMIN)"
            )
        raise VMError(f"depmod of the kernel's modules failed (exit {result.returncode}): {said}", hint)


def _take(index: Path, directory: Path) -> None:
    """The index files the sandbox copied out: only depmod's names, regular files, at
    most the sandbox's scratch in all; moved into the release directory (a rename
    replaces whatever the package had under that name, a symlink included, never
    writing through it)."""
    found = {entry.name: entry for entry in os.scandir(index)}
    strays = sorted(n for n, e in found.items() if n not in INDEX_NAMES or not e.is_file(follow_symlinks=False))
    if strays:
        raise VMError(f"depmod's sandbox gave back {', '.join(strays[:5])}", "the kernel package may be hostile")
    if sum(e.stat(follow_symlinks=False).st_size for e in found.values()) > _SCRATCH:
        raise VMError(f"depmod's index is larger than {_SCRATCH >> 20} MiB", "the kernel package may be hostile")
    absent = [name for name in _REQUIRED if name not in found]
    if absent:
        raise VMError(
            f"depmod wrote no {' or '.join(absent)} for the kernel's modules",
            "the kernel package's modules may be damaged or hostile: use the package as Debian publishes it",
        )
    for name in found:
        (index / name).chmod(0o644)
        (index / name).replace(directory / name)
