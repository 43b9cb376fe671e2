"""All-or-nothing file writes: a failed or interrupted write never leaves a half file.

Every output of one operation is written under a temporary name in its
destination folder (so the final rename stays on one filesystem), flushed to
disk, given the permissions a plain ``open()`` would have given it (the
user's umask, or the mode of the file it replaces), and only then moved onto
its final path, all of them together (:func:`atomic_group`). If anything
fails, the temporaries are removed and every previous output is left as it
was, including outputs of the same group already moved into place (they
are rolled back).

Temporary and backup names start with :data:`TEMP_PREFIX` and record the
host and process that made them, so leftovers of a killed run (a zarr
folder of gigabytes, say) are recognised and removed by the next run that
writes into the same folder (:func:`clean_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from napari_unet.errors import UserInputError

#: Start of every temporary or backup name this module makes.
TEMP_PREFIX = ".napari-unet~"
#: Leftovers of a process on another host are stale after this many seconds
#: (its process cannot be asked whether it is alive).
STALE_SECONDS = 24 * 3600
#: errno values that mean "this output cannot be written" rather than a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOENT}

_HOST = socket.gethostname().replace("~", "_") or "host"
_cleaned: set[Path] = set()
_cleaned_lock = threading.Lock()


class OutputError(UserInputError):
    """An output could not be written (full disk, read-only place, a folder in the way, ...)."""


# -- permissions and durability -----------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` is process-wide and threads write files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no /proc (macOS, Windows): the classic swap, briefly
    os.umask(old)
    return old


def _final_mode(tmp: Path, final: Path) -> int:
    """The mode ``final`` keeps when replaced, else what a plain ``open()``/``mkdir()`` gives."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(final.stat().st_mode)
    base = 0o777 if tmp.is_dir() else 0o666
    return base & ~current_umask()


def _fsync(path: Path) -> None:
    """Flush a file, or every file and folder of a tree, to disk."""
    if path.is_dir() and not path.is_symlink():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_one(Path(root) / name)
            _fsync_one(Path(root), folder=True)
    else:
        _fsync_one(path)


def _fsync_one(path: Path, folder: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:
            return  # some systems cannot open folders for fsync
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


# -- names ------------------------------------------------------------------------
def _temp_name(final: Path, kind: str) -> str:
    # kind~host~pid~random~final-name; the final name lets a stale backup be put back.
    return f"{TEMP_PREFIX}{kind}~{_HOST}~{os.getpid()}~{uuid.uuid4().hex[:8]}~{final.name}"[:255]


def _parse(name: str) -> tuple[str, str, int, str] | None:
    parts = name[len(TEMP_PREFIX) :].split("~", 4)
    if not name.startswith(TEMP_PREFIX) or len(parts) != 5 or not parts[2].isdigit():
        return None
    kind, host, pid, _, final = parts
    return kind, host, int(pid), final


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def clean_stale(folder: str | os.PathLike) -> None:
    """Remove temporaries left in ``folder`` by killed runs (once per folder and process).

    A leftover is stale when its process, on this host, has ended, or, made
    on another host, when it is older than :data:`STALE_SECONDS`. A stale
    backup whose final path is missing (a run killed while swapping a
    folder in) is put back instead of removed: it is the previous output.
    """
    folder = Path(folder).resolve()
    with _cleaned_lock:
        if folder in _cleaned:
            return
        _cleaned.add(folder)
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    except OSError:
        return
    for entry in entries:
        parsed = _parse(entry.name)
        if parsed is None:
            continue
        kind, host, pid, final = parsed
        if host == _HOST:
            if _alive(pid):
                continue
        else:
            with contextlib.suppress(OSError):
                if time.time() - entry.lstat().st_mtime < STALE_SECONDS:
                    continue
        target = folder / final
        if kind == "old" and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.replace(entry, target)
                continue
        _remove(entry)


# -- checks -------------------------------------------------------------------------
def is_zarr_store(path: Path) -> bool:
    """True for a folder holding a zarr array or group (v2 or v3)."""
    return path.is_dir() and any((path / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup"))


def check_target(path: str | os.PathLike, folder_output: bool = False) -> Path:
    """Refuse an output path that cannot be (re)placed, before any work is done.

    Parameters
    ----------
    path : str or PathLike
        The output's final path.
    folder_output : bool
        The output is a folder (a zarr store): an existing zarr store is
        replaced, any other folder is refused (it may hold the user's files).

    Raises
    ------
    OutputError
        If the folder does not exist, a folder is in the way, or nothing can
        be created there (read-only, no permission, a pseudo-filesystem).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: its folder does not exist")
    if path.is_dir() and not path.is_symlink():
        if not folder_output:
            raise OutputError(f"cannot write {str(path)!r}: it is a folder")
        if not is_zarr_store(path):
            raise OutputError(f"cannot write {str(path)!r}: it is a folder that is not a zarr store (not replacing it)")
    try:
        fd, probe = tempfile.mkstemp(prefix=_temp_name(path, "probe")[:200], dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def _write_error(exc: OSError, finals: list[Path], temps: dict[Path, Path]) -> OutputError | None:
    """The user-facing error for an OSError while writing a group, or None if it is not about the outputs."""
    named = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else None
    which = None
    if named is not None:
        for tmp, final in temps.items():
            if named == tmp or tmp in named.parents or named == final:
                which = [final]
                break
    if which is None:
        # An error naming another file (an input, say) is not about the outputs;
        # one naming no file is when its errno says "cannot write".
        if named is not None or exc.errno not in WRITE_ERRNOS:
            return None
        which = finals
    names = ", ".join(repr(str(p)) for p in which)
    return OutputError(f"cannot write {names}: {exc.strerror or exc}")


# -- the group ---------------------------------------------------------------------
class AtomicGroup:
    """Outputs written under temporary names and moved into place together, or not at all.

    Use through :func:`atomic_group`; :meth:`new_file` / :meth:`new_dir`
    hand out the temporary path to write for each final path.
    """

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable  # fsync before the rename (off only for scratch data)
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final) not yet moved or removed
        self._all: list[tuple[Path, Path]] = []  # every pair handed out, for error messages

    @property
    def finals(self) -> list[Path]:
        """The final paths, in the order they were added."""
        return [final for _, final in self._all]

    def new_file(self, final: str | os.PathLike) -> Path:
        """An (empty) temporary file beside ``final``, moved onto it on commit."""
        return self._new(Path(final), folder_output=False)

    def new_dir(self, final: str | os.PathLike) -> Path:
        """An empty temporary folder beside ``final`` (e.g. a zarr store), moved onto it on commit."""
        return self._new(Path(final), folder_output=True)

    def _new(self, final: Path, folder_output: bool) -> Path:
        if final.resolve() in {f.resolve() for f in self.finals}:
            raise OutputError(f"{str(final)!r} is given as two different outputs")
        check_target(final, folder_output)
        folder = final.parent if str(final.parent) else Path(".")
        clean_stale(folder)
        try:
            if folder_output:
                tmp = Path(tempfile.mkdtemp(prefix=_temp_name(final, "tmp"), dir=folder))
            else:
                fd, name = tempfile.mkstemp(prefix=_temp_name(final, "tmp"), dir=folder)
                os.close(fd)
                tmp = Path(name)
        except OSError as exc:
            raise OutputError(f"cannot write {str(final)!r}: {exc.strerror or exc}") from exc
        self._pending.append((tmp, final))
        self._all.append((tmp, final))
        return tmp

    def abort(self) -> None:
        """Remove every temporary."""
        for tmp, _ in self._pending:
            _remove(tmp)
        self._pending = []

    def commit(self) -> None:
        """Flush, set permissions, and move every temporary onto its final path, all or none."""
        for tmp, final in self._pending:
            if self.durable:
                _fsync(tmp)
            os.chmod(tmp, _final_mode(tmp, final))
        several = len(self._pending) > 1
        backups: list[tuple[Path, Path]] = []  # (backup, final)
        placed: list[Path] = []
        try:
            for tmp, final in self._pending:
                if several or final.is_dir():
                    backup = _backup(final)
                    if backup is not None:
                        backups.append((backup, final))
                os.replace(tmp, final)
                placed.append(final)
        except BaseException:
            _roll_back(placed, backups)
            self.abort()
            raise
        for backup, _ in backups:
            _remove(backup)
        for folder in {final.parent for final in placed} if self.durable else ():
            _fsync_one(folder if str(folder) else Path("."), folder=True)
        self._pending = []


def _backup(final: Path) -> Path | None:
    """Keep the previous ``final`` under a backup name; None when there is none.

    A file is hard-linked, so ``final`` stays in place until the new one
    replaces it in one rename; a folder (zarr) cannot be replaced by a rename
    and is moved aside.
    """
    if not os.path.lexists(final):
        return None
    backup = final.with_name(_temp_name(final, "old"))
    if final.is_dir() and not final.is_symlink():
        os.replace(final, backup)
        return backup
    try:
        os.link(final, backup, follow_symlinks=False)
    except OSError:  # no hard links here (some network or FAT filesystems)
        os.replace(final, backup)
    return backup


def _roll_back(placed: list[Path], backups: list[tuple[Path, Path]]) -> None:
    """Undo a partly done commit: the new outputs go, the previous ones come back."""
    restored = {final for _, final in backups}
    for final in placed:
        if final not in restored:
            _remove(final)
    for backup, final in backups:
        with contextlib.suppress(OSError):
            if os.path.lexists(final) and os.path.samestat(os.lstat(backup), os.lstat(final)):
                # Not replaced yet: still the hard link's file. (rename() between two links
                # of one file does nothing, and would leave the backup behind.)
                os.unlink(backup)
                continue
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(backup, final)


@contextlib.contextmanager
def atomic_group(durable: bool = True) -> Iterator[AtomicGroup]:
    """Write several outputs all-or-nothing (see the module docstring).

    Parameters
    ----------
    durable : bool
        fsync every output (and its folder) around the rename, so a power
        cut cannot leave an empty file under the final name. Off only for
        data that is thrown away anyway (the widget's display stores).

    Yields
    ------
    AtomicGroup
        Ask it for a temporary path per output and write there; when the
        block ends normally everything is moved into place, on any
        exception (KeyboardInterrupt included) nothing is.

    Raises
    ------
    OutputError
        For an OSError about the outputs (full disk, read-only, ...),
        naming the user's paths, never the temporary ones.
    """
    group = AtomicGroup(durable)
    try:
        yield group
        group.commit()
    except OSError as exc:
        group.abort()
        finals, temps = group.finals, dict(group._all)
        error = _write_error(exc, finals, temps)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        group.abort()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` once the block succeeds.

    One output of :func:`atomic_group`: on any exception the temporary file
    is removed and ``path`` is untouched.
    """
    with atomic_group() as group:
        yield group.new_file(path)


@contextlib.contextmanager
def scratch_dir(folder: str | os.PathLike, label: str = "scratch") -> Iterator[Path]:
    """A hidden working folder in ``folder``, removed at the end (by the next run if this one is killed)."""
    folder = Path(folder)
    clean_stale(folder)
    path = Path(tempfile.mkdtemp(prefix=_temp_name(folder / label, "scratch"), dir=folder))
    try:
        yield path
    finally:
        _remove(path)
