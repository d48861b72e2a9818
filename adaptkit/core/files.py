"""The one place user paths are checked, read and written.

Every OSError (a name too long, no permission, a full disk, a read-only
file system) and every name the file system cannot encode becomes one
adaptkit error line naming the path; a write creates its file exclusively
(``O_EXCL`` / ``link``), so two runs without ``--force`` never both win;
``--force`` keeps the replaced file's mode (else the umask default); and only
regular files are ever replaced. A temporary file is removed whatever stops
the write, SIGTERM included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from adaptkit.errors import AdaptkitError, EmitError, Terminated

__all__ = [
    "os_error_message",
    "user_path",
    "user_path_errors",
    "check_destination",
    "check_folder",
    "write_atomic",
    "read_bytes_bounded",
]

_REASONS = {
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EEXIST: "it exists",
}


def os_error_message(exc: BaseException) -> str:
    """A short reason for an OSError or an unencodable name."""
    if isinstance(exc, UnicodeError):
        return "the name is not valid UTF-8; rename it"
    if isinstance(exc, OSError):
        return _REASONS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    return f"{type(exc).__name__}: {exc}"


def show(path: str | os.PathLike[str]) -> str:
    """``path`` quoted for a message, with undecodable bytes escaped (printable on any terminal)."""
    return repr(os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def user_path(path: str | os.PathLike[str], what: str, error: type[AdaptkitError] = EmitError) -> Path:
    """``path`` as a Path, refused when it is empty, not UTF-8, or its name is too long to exist."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise error(f"{what} is empty; give a file name")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} {show(text)}: the name is not valid UTF-8; use a UTF-8 name") from None
    if "\x00" in text:
        raise error(f"{what} {show(text)} holds a NUL character; give a plain file name")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~name" for a user this machine does not know
        raise error(f"{what} {show(text)}: no such user's home folder; give the full path") from None


@contextlib.contextmanager
def user_path_errors(path: str | os.PathLike[str], action: str, error: type[AdaptkitError]) -> Iterator[None]:
    """OSError and unencodable names inside the block -> ``error('cannot ACTION PATH: reason')``."""
    try:
        yield
    except (OSError, UnicodeError) as exc:
        if isinstance(exc, AdaptkitError):
            raise
        raise error(f"cannot {action} {show(path)}: {os_error_message(exc)}") from None


def check_folder(folder: Path, what: str = "folder", error: type[AdaptkitError] = EmitError) -> Path:
    """``folder`` exists, is a folder and can be written in; one line saying which it is not."""
    with user_path_errors(folder, "use", error):
        if not folder.exists():
            parent = next((p for p in folder.parents if p.exists()), None)
            if parent is not None and not parent.is_dir():
                raise error(f"{what} {show(folder)} cannot exist: {show(parent)} is a file, not a folder")
            raise error(f"{what} {show(folder)} does not exist; create it first")
        if not folder.is_dir():
            raise error(f"{what} {show(folder)} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            reason = "the file system is read-only" if _read_only(folder) else "permission denied"
            raise error(f"cannot write in {what} {show(folder)}: {reason}")
    return folder


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_destination(path: str | os.PathLike[str], force: bool = False) -> Path:
    """The folder ``path`` will be written in; EmitError when it cannot be written there.

    Refused: an empty or non-UTF-8 name, a name too long, a folder, an
    existing file without ``force``, anything that is not a regular file
    (a FIFO, a device, a dangling symlink) even with ``force``, a missing or
    unwritable folder.
    """
    target = user_path(path, "--out")
    with user_path_errors(target, "write", EmitError):
        if len(os.fsencode(target.name)) > _name_max(target):
            raise EmitError(f"cannot write {show(target)}: the name is too long for the file system")
        folder = target.parent if str(target.parent) else Path(".")
        check_folder(folder)
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            return folder
        if stat.S_ISLNK(info.st_mode):
            try:
                info = os.stat(target)
            except FileNotFoundError:
                raise EmitError(
                    f"{show(target)} is a dangling symbolic link; remove it or choose another name"
                ) from None
        if stat.S_ISDIR(info.st_mode):
            raise EmitError(f"{show(target)} is a folder; give a file name such as fragment.py")
        if not stat.S_ISREG(info.st_mode):
            raise EmitError(f"{show(target)} is not a regular file (a FIFO, socket or device); choose another name")
        if not force:
            raise EmitError(f"{show(target)} exists; pass --force to overwrite it")
    return folder


def _name_max(path: Path) -> int:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` inside the block (main thread only), so ``finally`` clauses run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_atomic(path: str | os.PathLike[str], text: str | bytes, force: bool = False) -> None:
    """Write ``text`` to ``path`` in one step; refuse an existing file unless ``force``.

    Without ``force`` the file is created exclusively (a hard link of the
    finished temporary file, which fails if the name appeared meanwhile).
    With ``force`` an existing regular file is replaced and keeps its mode; a
    symbolic link to one is written through (the link stays).
    """
    target = user_path(path, "--out")
    folder = check_destination(target, force)
    data = _encode(text, target)
    if force and target.is_symlink():
        target = Path(os.path.realpath(target))
        folder = target.parent
    with user_path_errors(target, "write", EmitError), _terminate_raises():
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode) if force else None
        except FileNotFoundError:
            mode = None
        tmp = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
            with os.fdopen(fd, "wb") as handle:
                if mode is not None:
                    os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if force:
                _replace_regular(tmp, target)
            else:
                _link_exclusive(tmp, target, data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _encode(text: str | bytes, target: Path) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EmitError(
            f"cannot write {show(target)}: its text holds characters that are not valid UTF-8 "
            "(an undecodable file name in an argument?)"
        ) from None


def _replace_regular(tmp: Path, target: Path) -> None:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):  # it changed since the check
        raise EmitError(f"{show(target)} is not a regular file; choose another name")
    os.replace(tmp, target)


def _link_exclusive(tmp: Path, target: Path, data: bytes) -> None:
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        raise EmitError(f"{show(target)} exists (written meanwhile); pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    # no hard links here: create the file exclusively and fill it (exclusive, not atomic)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise EmitError(f"{show(target)} exists (written meanwhile); pass --force to overwrite it") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise


def read_bytes_bounded(
    path: str | os.PathLike[str], limit: int, what: str, error: type[AdaptkitError], *, follow: bool = False
) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes; None when it is larger.

    Opens without blocking (a FIFO never hangs the reader) and, unless
    ``follow``, without following a final symlink; refuses anything but a
    regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    with user_path_errors(path, f"read {what}", error):
        fd = os.open(path, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise error(f"{what} {show(path)} is not a regular file")
            if info.st_size > limit:
                return None
            chunks = []
            size = 0
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:  # grew while reading
                    return None
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
