"""Files below a directory, written and read only through descriptors that cannot leave it.

Sources are hostile: a tree may hold a symlink to ``.`` and a second one whose target
*looks* inside (``a/a/a/../..``) but really leads out, and a member "inside" it. Checking
names as text cannot see that, so nothing here resolves a path as text. ``Beneath`` opens
its root once and reaches every member by opening each path component relative to its
parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY``; a component that is a symlink (or
not a directory) is refused, never followed. Files are created with
``O_CREAT | O_EXCL | O_NOFOLLOW``, so nothing existing is ever replaced or written through.
Reading works the same way, so a file reached through a symlinked directory is refused
rather than read from elsewhere. After writing, ``check_links`` resolves every symlink of
the tree against what was really written (component by component, and with
``os.path.realpath``) and refuses any that leads outside; the caller deletes its scratch.

``write_output`` and ``write_tree`` are for the files the tool writes for the user
(``--report``, ``--table``, ``--results``, ``--save-context``, ``patch --output``):
written to a temporary name in the same directory, synced, then renamed over the target,
which must be a regular file (or directory) or absent — never a symlink, a device or a FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Protocol

from . import log
from .errors import ConfigError, UnsafeSourceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIRS = 64  # directory descriptors kept open (trees are written mostly in order)
MAX_LINK_HOPS = 40  # as the kernel's limit on symlinks followed in one lookup
# Directories a member may nest in: kube-router's deepest vendored file is ~15 down. Deeper
# trees are refused by name, so that nothing that walks a tree (os.fwalk, rmtree, the tree
# digest) meets one deep enough to end in a RecursionError.
MAX_DEPTH = 128
CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Beneath:
    """A directory tree reached only through descriptors below its root.

    ``what`` names the tree in refusals (``"kube-router-0.3.2.tar.gz"``,
    ``"git tree"``); ``hint`` is the fix they carry. With ``create`` the root (and its
    parents) are made when missing; the root itself must not be a symlink.
    """

    def __init__(self, root: Path, what: str, hint: str = "refusing this source", *, create: bool = False) -> None:
        self.root = root
        self.what = what
        self.hint = hint
        if create:
            root.mkdir(parents=True, exist_ok=True)
        try:
            self._root_fd = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeSourceError(f"{root} is not a directory (a symlink or a file)", self.hint) from exc
            raise
        self._dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> Beneath:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- names ---------------------------------------------------------------------------
    def refuse(self, member: str, why: str) -> UnsafeSourceError:
        return UnsafeSourceError(f"refusing {self.what}: member {member!r} {why}", self.hint)

    def parts(self, rel: str) -> tuple[str, ...]:
        """The components of a member name; refuses what cannot name a path inside."""
        if not isinstance(rel, str) or not rel:
            raise self.refuse(str(rel), "has an empty name")
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self.refuse(rel, "has a name that is not valid UTF-8") from exc
        if "\0" in rel:
            raise self.refuse(rel, "has a NUL byte in its name")
        if rel.startswith("/"):
            raise self.refuse(rel, "has an absolute path")
        parts = tuple(p for p in rel.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.refuse(rel, "contains '..'")
        if not parts:
            raise self.refuse(rel, "names the tree's root")
        if len(parts) > MAX_DEPTH:
            raise self.refuse(rel[:60] + "…", f"nests more than {MAX_DEPTH} directories (a hostile tree)")
        return parts

    # -- directories ---------------------------------------------------------------------
    def _dir(self, rel: str, parts: tuple[str, ...], create: bool) -> int | None:
        """A descriptor of directory ``parts`` (no component a symlink); None when absent
        and not ``create``. Descriptors are cached; the caller must not close them. Walks
        down from the deepest cached ancestor in a loop (no recursion, whatever the depth)."""
        if len(parts) > MAX_DEPTH:
            raise self.refuse(rel[:60] + "…", f"nests more than {MAX_DEPTH} directories (a hostile tree)")
        cached = len(parts)
        while cached and parts[:cached] not in self._dirs:
            cached -= 1
        fd = self._root_fd
        if cached:
            self._dirs.move_to_end(parts[:cached])
            fd = self._dirs[parts[:cached]]
        for depth in range(cached + 1, len(parts) + 1):
            opened = self._open_dir(rel, parts[:depth], fd, create)
            if opened is None:
                return None
            fd = opened
        return fd

    def _open_dir(self, rel: str, parts: tuple[str, ...], parent: int, create: bool) -> int | None:
        """Open (or make) the last component of ``parts`` below ``parent`` and cache it."""
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile (or a dangling symlink: the open below refuses it)
            except OSError as exc:
                raise self._os_refusal(rel, exc) from exc
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise self._component_refusal(rel, parts, exc, parent) from exc
        except OSError as exc:
            raise self._component_refusal(rel, parts, exc, parent) from exc
        self._dirs[parts] = fd
        self._dirs.move_to_end(parts)
        while len(self._dirs) > _OPEN_DIRS:
            oldest_parts, oldest = next(iter(self._dirs.items()))
            if oldest == parent:  # still needed by the caller's walk down: keep it
                self._dirs.move_to_end(oldest_parts)
                continue
            del self._dirs[oldest_parts]
            os.close(oldest)
        return fd

    def _component_refusal(
        self, rel: str, parts: tuple[str, ...], exc: OSError, parent: int | None = None
    ) -> Exception:
        """Why the component ``parts`` could not be opened as a directory."""
        where = "/".join(parts)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_NOFOLLOW | O_DIRECTORY answers ENOTDIR for a symlink to a directory.
            if parent is None:
                parent = self._root_fd if len(parts) == 1 else self._dirs.get(parts[:-1])
            info = None if parent is None else _lstat(parts[-1], parent)
            if exc.errno == errno.ELOOP or (info is not None and stat.S_ISLNK(info.st_mode)):
                return self.refuse(rel, f"passes through the symlink {where!r}")
            return self.refuse(rel, f"passes through {where!r}, which is not a directory")
        return self._os_refusal(rel, exc)

    def _os_refusal(self, rel: str, exc: OSError) -> Exception:
        if exc.errno == errno.ENAMETOOLONG:
            return self.refuse(rel, "has a name longer than the file system allows")
        if exc.errno == errno.EILSEQ:
            return self.refuse(rel, "has a name the file system cannot store")
        return exc  # disk full, permissions: the caller reports those with the place

    def _parent(self, rel: str, create: bool) -> tuple[int | None, str]:
        parts = self.parts(rel)
        return self._dir(rel, parts[:-1], create), parts[-1]

    # -- writing -------------------------------------------------------------------------
    def mkdir(self, rel: str) -> None:
        self._dir(rel, self.parts(rel), create=True)

    def write(self, rel: str, source: bytes | Readable, mode: int = 0o644, size: int | None = None) -> None:
        """Create the regular file ``rel`` (it must not exist) with ``source``'s bytes;
        with ``size``, exactly that many bytes must arrive."""
        parent, name = self._parent(rel, create=True)
        assert parent is not None
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        except FileExistsError as exc:
            raise self.refuse(rel, "appears twice (or over a directory or symlink)") from exc
        except OSError as exc:
            raise self._component_refusal(rel, self.parts(rel), exc) from exc
        with os.fdopen(fd, "wb") as handle:
            if isinstance(source, bytes):
                handle.write(source)
                written = len(source)
            else:
                written = _copy(source, handle, size)
            if size is not None and written != size:
                raise self.refuse(rel, f"declares {size} bytes but holds {written} (a truncated archive)")
            os.fchmod(handle.fileno(), mode & 0o777)  # never setuid, setgid or sticky

    def symlink(self, rel: str, target: str) -> None:
        parent, name = self._parent(rel, create=True)
        assert parent is not None
        if not target or "\0" in target:
            raise self.refuse(rel, "is a symlink with an empty or NUL-holding target")
        try:
            target.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self.refuse(rel, "is a symlink whose target is not valid UTF-8") from exc
        try:
            os.symlink(target, name, dir_fd=parent)
        except FileExistsError as exc:
            raise self.refuse(rel, "appears twice (or over a directory or file)") from exc
        except OSError as exc:
            raise self._component_refusal(rel, self.parts(rel), exc) from exc

    def hardlink(self, rel: str, existing: str) -> None:
        """``rel`` as another name of the regular file ``existing`` (inside the tree)."""
        src_parent, src_name = self._parent(existing, create=False)
        info = None if src_parent is None else _lstat(src_name, src_parent)
        if info is None or not stat.S_ISREG(info.st_mode):
            raise self.refuse(rel, f"is a hard link to {existing!r}, which is not a regular file of the tree")
        assert src_parent is not None
        parent, name = self._parent(rel, create=True)
        assert parent is not None
        try:
            os.link(src_name, name, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
        except FileExistsError as exc:
            raise self.refuse(rel, "appears twice") from exc
        except OSError as exc:
            raise self._component_refusal(rel, self.parts(rel), exc) from exc

    # -- reading -------------------------------------------------------------------------
    def lstat(self, rel: str) -> os.stat_result | None:
        """The member's own status (a symlink is not followed); None when absent."""
        parent, name = self._parent(rel, create=False)
        return None if parent is None else _lstat(name, parent)

    def read(self, rel: str) -> bytes | None:
        """The content of the regular file ``rel``, None when absent. A symlink, a
        special file, or a path through a symlink is refused."""
        opened = self._open(rel)
        if opened is None:
            return None
        with opened as handle:
            return handle.read()

    def read_with_mode(self, rel: str) -> tuple[bytes, int]:
        opened = self._open(rel)
        if opened is None:
            raise self.refuse(rel, "does not exist")
        with opened as handle:
            return handle.read(), os.fstat(handle.fileno()).st_mode

    def readlink(self, rel: str) -> str:
        parent, name = self._parent(rel, create=False)
        if parent is None:
            raise self.refuse(rel, "does not exist")
        return os.readlink(name, dir_fd=parent)

    def _open(self, rel: str) -> BinaryIO | None:
        parent, name = self._parent(rel, create=False)
        if parent is None:
            return None
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.refuse(rel, "is a symlink, not a regular file") from exc
            raise self._component_refusal(rel, self.parts(rel), exc) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self.refuse(rel, "is not a regular file")
        return os.fdopen(fd, "rb")

    # -- the final check -----------------------------------------------------------------
    def links(self) -> Iterator[str]:
        """Every symlink of the tree, by its path relative to the root."""
        for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=self._root_fd):
            for name in (*dirnames, *filenames):
                info = _lstat(name, dirfd)
                if info is not None and stat.S_ISLNK(info.st_mode):
                    yield (PurePosixPath(dirpath) / name).as_posix()

    def check_links(self) -> None:
        """Refuse the tree if any symlink resolves outside it. Resolved against what was
        written, component by component through descriptors (no path string, so no
        PATH_MAX to hide behind) with ``..`` never above the root, so the answer does not
        depend on where the tree sits; then confirmed with ``os.path.realpath``."""
        root = Path(os.path.realpath(self.root))
        for rel in self.links():
            target = self.readlink(rel)
            why = self._escape(rel, target)
            if why is not None:
                raise self.refuse(rel, f"is a symlink that {why} (-> {target})")
            real = Path(os.path.realpath(root / rel))
            if not real.is_relative_to(root):
                raise self.refuse(rel, f"is a symlink that resolves outside the tree (-> {target}, really {real})")

    def _escape(self, rel: str, target: str) -> str | None:
        """Follow the symlink ``rel`` through the written tree as the kernel would: why it
        does not stay inside (a ``..`` above the root, an absolute link, a loop), or None."""
        outside = "resolves outside the tree"
        done: list[str] = rel.split("/")[:-1]
        todo: list[str] = target.split("/")
        if target.startswith("/"):
            return outside
        hops = 1
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    return outside
                done.pop()
                continue
            parent = self._existing_dir(tuple(done))
            info = None if parent is None else _lstat(part, parent)
            if parent is not None and info is not None and stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return f"starts a chain of more than {MAX_LINK_HOPS} links (a loop)"
                target = os.readlink(part, dir_fd=parent)
                if target.startswith("/"):
                    return outside
                todo = target.split("/") + todo
                continue
            done.append(part)  # a directory, or missing: the rest resolves as text
        return None

    def _existing_dir(self, parts: tuple[str, ...]) -> int | None:
        try:
            return self._dir("/".join(parts) or ".", parts, create=False)
        except (UnsafeSourceError, OSError):
            return None  # not a directory (a file, or missing): nothing below it resolves


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _copy(source: Readable, target: IO[bytes], size: int | None) -> int:
    written = 0
    while size is None or written < size:
        want = CHUNK if size is None else min(CHUNK, size - written)
        chunk = source.read(want)
        if not chunk:
            break
        target.write(chunk)
        written += len(chunk)
    return written


def open_regular(path: Path) -> BinaryIO | None:
    """``path`` opened for reading if it is a regular file (a symlink the user's path
    holds is followed), else None: a FIFO or a device is never opened blocking, so a
    hostile directory cannot make the first read wait forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


@contextlib.contextmanager
def scratch_tree(root: Path, what: str, hint: str) -> Iterator[Beneath]:
    """Write a tree below ``root`` (made when missing), then refuse it if any of its
    symlinks leads outside. ``root`` is the caller's scratch: on a refusal the caller
    removes it, so nothing of a refused tree is ever cached or used."""
    with Beneath(root, what, hint, create=True) as tree:
        yield tree
        tree.check_links()


# -- files for the user ----------------------------------------------------------------------
def check_output(path: Path, what: str, directory: bool = False) -> None:
    """Refuse an output path whose target is a symlink, a device, a FIFO or a socket (or a
    directory where a file goes, a non-empty directory where a tree goes)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot use {path} for {what} ({exc.strerror})", "name a path you may write") from exc
    mode = info.st_mode
    kind = _kind(mode)
    if directory:
        if stat.S_ISDIR(mode):
            if any(path.iterdir()):
                raise ConfigError(f"{path} is not empty", "choose an empty or new directory")
            return
        raise ConfigError(f"refusing to write {what} to {path}: it is {kind}", "name a new or empty directory")
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"refusing to write {what} to {path}: it is {kind}", "name a regular file or a path that does not exist"
        )


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink (its target is never written through)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def write_output(path: Path, content: bytes | Path | Callable[[IO[bytes]], None], what: str) -> None:
    """Write a file for the user atomically: a temporary file beside it, synced, renamed
    over it. ``content`` is bytes, a file to copy, or a function writing to a handle."""
    check_output(path, what)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)  # O_EXCL | O_NOFOLLOW
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            elif isinstance(content, Path):
                with content.open("rb") as source:
                    _copy(source, handle, None)
            else:
                content(handle)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        check_output(path, what)  # a symlink or device put there meanwhile is not replaced
        Path(temp).replace(path)
        _sync_dir(parent)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_tree(dest: Path, fill: Callable[[Beneath], None], what: str) -> None:
    """Write a directory tree for the user: filled in a temporary sibling, its links
    checked, then renamed to ``dest`` (which must be absent or an empty directory)."""
    check_output(dest, what, directory=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with scratch_tree(temp, what, "the tree was not written; nothing was kept") as tree:
            fill(tree)
        temp.chmod(0o777 & ~_umask())
        check_output(dest, what, directory=True)
        temp.replace(dest)  # rename(2) replaces an empty directory, never a symlink's target
        _sync_dir(dest.parent)
    except BaseException:
        if temp.exists():
            shutil.rmtree(temp)
        raise


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.info(f"could not sync {directory} (the file is written; a crash now may lose it)")
    finally:
        os.close(fd)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current
