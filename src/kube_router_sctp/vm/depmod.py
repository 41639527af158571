"""depmod's index of a kernel's modules, for the Docker-host guest's modules disk.

That guest's own ``modprobe`` calls (the kernel's, Docker's, kube-router's) need depmod's
whole index: aliases, built-in names, symbols. depmod is a C program that parses every
module's ELF, and the modules are a package's bytes, hostile input: a red-team review
crashed the host's kmod 30 with heap corruption on fuzzed modules. So, run as root, the
tool runs depmod as if it were compromised:

- as ``nobody``, with no capabilities and no new privileges (``setpriv``), with limits on
  file size, processes and core dumps (``prlimit``);
- as PID 1 of a PID namespace of its own, with its own ``/proc`` (``unshare
  --mount-proc``): it sees no host process, and anything it starts ends with it;
- in mount, network, IPC and UTS namespaces of its own, where ``/tmp``, ``/var/tmp``,
  ``/dev/shm`` and ``/run`` are small read-only-to-it tmpfs, and the modules tree is
  bind-mounted at ``/tmp/modules``; the only place it may write is the release
  directory, which is ``nobody``'s for the run;
- in a session of its own (no terminal to read or to push keystrokes into), with stdin
  from ``/dev/null``, a clean environment, ``/`` as its working directory, and its output
  in a file it cannot grow past the file-size limit.

Afterwards the release directory is root's again, and anything new in it must be a
regular file named ``modules.*`` (what depmod writes); anything else is removed and the
index refused. Run as another user, depmod runs as that user, plainly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import log
from ..errors import VMError

_NOBODY = 65534
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INDEX = re.compile(r"modules\.[a-z.]{1,40}")  # what depmod writes into the release directory
_FILE_LIMIT = 64 << 20  # depmod's largest file for a whole Debian kernel is about 1 MiB
_PROCESSES = 64
_DROP = f"--reuid={_NOBODY} --regid={_NOBODY} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all"
_LIMITS = f"--fsize={_FILE_LIMIT} --nproc={_PROCESSES} --core=0"
# $1 the tree, $2 depmod, $3 the release; everything else is fixed text. The tree is
# opened first and bound from its descriptor: the tmpfs mounts may hide where it lives.
_SANDBOX = (
    "set -e; "
    'exec 3< "$1"; '
    "for d in /tmp /var/tmp /dev/shm /run; do "
    '[ -d "$d" ] && mount -t tmpfs -o size=1m,mode=755 krs "$d" || [ ! -d "$d" ]; done; '
    "mkdir /tmp/modules; "
    "mount --bind /proc/self/fd/3 /tmp/modules; "
    "exec 3<&-; "
    "cd /; "
    f'exec setpriv {_DROP} -- prlimit {_LIMITS} -- "$2" -b /tmp/modules "$3"'
)
_NAMESPACES = (
    *("--mount", "--propagation", "private"),
    *("--pid", "--fork", "--kill-child", "--mount-proc"),
    *("--net", "--ipc", "--uts"),
)


def run(base: Path, release: str, timeout: float = 600.0) -> None:
    """Write depmod's index into ``base/lib/modules/<release>``; raise VMError if depmod
    fails or leaves anything but its index there."""
    depmod = shutil.which("depmod")
    if depmod is None:
        raise VMError("depmod is not installed", "apt-get install kmod")
    directory = base / "lib" / "modules" / release
    if os.geteuid() != 0:
        _execute([depmod, "-b", str(base), release], timeout)
        return
    tools = {tool: shutil.which(tool) for tool in ("unshare", "sh")}
    missing = [tool for tool in ("unshare", "setpriv", "prlimit", "mount", "sh") if shutil.which(tool) is None]
    if missing:
        raise VMError(f"{', '.join(missing)} not installed (depmod runs sandboxed)", "apt-get install util-linux mount")
    before = {entry.name: entry.inode() for entry in os.scandir(directory)}
    try:
        os.chown(directory, _NOBODY, _NOBODY)
    except OSError as exc:
        raise VMError(
            f"cannot hand {directory} to uid {_NOBODY} for depmod ({exc.strerror})",
            "run the tool as the host's root: depmod runs as nobody, which this user namespace does not map",
        ) from exc
    try:
        for parent in (base, base / "lib", base / "lib" / "modules"):  # our scratch: enterable by nobody
            parent.chmod(0o755)
        command = [str(tools["unshare"]), *_NAMESPACES, "--", str(tools["sh"]), "-c", _SANDBOX, "krs-depmod"]
        _execute([*command, str(base), depmod, release], timeout)
    finally:
        os.chown(directory, 0, 0, follow_symlinks=False)
    _check_left(directory, before)


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


def _check_left(directory: Path, before: dict[str, int]) -> None:
    """Everything depmod left new or replaced in the release directory is a regular
    ``modules.*`` file, root's now; anything else (and anything of the package's it moved
    away) is removed and the index refused."""
    strays = []
    seen = set()
    for entry in os.scandir(directory):
        seen.add(entry.name)
        if before.get(entry.name) == entry.inode():
            continue
        # new, or replaced (an installed kernel's directory comes with an index already)
        if _INDEX.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            os.chown(entry.path, 0, 0, follow_symlinks=False)
            Path(entry.path).chmod(0o644)  # a regular file; nothing of depmod's runs any more
            continue
        strays.append(entry.name)
    strays += sorted(set(before) - seen)
    if not strays:
        return
    for name in strays:
        path = directory / name
        if os.path.lexists(path):  # iterative, however deep a planted tree is
            subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False, timeout=600)
    raise VMError(
        f"depmod left something other than its index among the kernel's modules ({', '.join(strays[:5])})",
        "the kernel package's modules may be hostile: use the package as Debian publishes it",
    )
