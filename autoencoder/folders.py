"""Output folders that appear whole or not at all, never replace each other, and never vanish.

Every folder a script writes (a model folder, a finetuning result, a test result) is written into
a hidden *staging* folder beside its final place, named ``.<name>.incomplete-<pid>-<random>``,
and renamed into place once complete. So:

- a run that fails or is killed leaves no folder that looks like a result; a killed run (SIGKILL,
  out of memory) cannot remove its staging folder, so later runs report it (:func:`stale_staging`)
  and ``--clean-stale`` removes it;
- the final name is *claimed* with ``os.mkdir`` (atomic: of two runs, one wins) right before the
  rename, and the rename only ever replaces that empty, just-claimed folder: two runs that pick the
  same name never overwrite each other. With ``unique=True`` the loser takes ``<name>_2``,
  ``<name>_3``, ... (model folders); otherwise it stops with :class:`FolderExistsError`;
- with ``replace=True`` an existing folder is *moved aside* to ``<name>.replaced-<timestamp>``
  (never deleted) once the new one is complete.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from autoencoder.errors import UserError

logger = logging.getLogger(__name__)

INCOMPLETE = ".incomplete-"  # in every staging folder's name
REPLACED = ".replaced-"  # in the name of a folder moved aside by a newer result
MARKER_FILE = ".incomplete.json"  # inside a staging folder: who writes it (removed before the rename)
MAX_SUFFIX = 1000  # <name>_2 ... <name>_999

# When this process started (close enough: this module is imported at start-up by the scripts).
PROCESS_STARTED = time.time()

# .<name>.incomplete-<pid>-<hex>; and the names older versions used: .<name>.tmp-<pid>, .<name>.old-<pid>.
_STAGING_RE = re.compile(r"^\.(?P<name>.+)\.incomplete-(?P<pid>\d+)-[0-9a-f]+$")
_LEGACY_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


class FolderExistsError(FileExistsError):
    """The folder a run was about to write already exists (and replacing it was not asked for)."""

    def __str__(self) -> str:  # one line, without the errno prefix
        return self.args[0] if self.args else "folder exists"


def naming(path: str | os.PathLike, error: OSError) -> OSError:
    """`error` with `path` as its file name when it names none (a failed write(2), ENOSPC, says no
    path); the one-line message then says which file could not be written."""
    if error.filename is not None or error.errno is None:
        return error
    named = type(error)(error.errno, error.strerror, str(path))
    named.__cause__ = error
    return named


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename (a reader never sees half of
    it); an OSError names `path`, and the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as error:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise naming(path, error) from None
    return path


_sha256_cache: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks; the same file (path, inode, size,
    modification and change times) is hashed once per process."""
    import hashlib

    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _sha256_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _sha256_cache[key] = digest.hexdigest()
    return _sha256_cache[key]


def write_npz(path: str | os.PathLike, arrays: dict) -> Path:
    """Write plain arrays to `path` (.npz) through a temporary file and a rename: never half-written."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def claim(path: Path) -> bool:
    """Create the empty folder `path`; False when something is already there (atomic)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    return True


def claim_unique(path: Path) -> Path:
    """Claim `path`, else `<path>_2`, `<path>_3`, ...; return the claimed (empty) folder."""
    path = Path(path)
    for index in range(1, MAX_SUFFIX):
        candidate = path if index == 1 else path.with_name(f"{path.name}_{index}")
        if claim(candidate):
            return candidate
    raise FolderExistsError(f"{path}: {MAX_SUFFIX - 1} folders of that name exist; expected a free name")


def claim_unique_file(path: Path) -> Path:
    """Create the empty file `path`, else `<stem>_2<suffix>`, ...; return it (atomic, like :func:`claim_unique`)."""
    path = Path(path)
    for index in range(1, MAX_SUFFIX):
        candidate = path if index == 1 else path.with_name(f"{path.stem}_{index}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return candidate
    raise FolderExistsError(f"{path}: {MAX_SUFFIX - 1} files of that name exist; expected a free name")


def _install(source: Path, claimed: Path) -> None:
    """Rename `source` onto the empty folder `claimed` (ours: claimed a moment ago)."""
    try:
        os.replace(source, claimed)  # POSIX: atomically replaces an empty directory
    except OSError:
        if os.name != "nt":
            raise
        os.rmdir(claimed)  # Windows cannot rename onto a directory
        os.rename(source, claimed)


def move_aside(path: Path, stamp: str | None = None) -> Path:
    """Rename the folder `path` to `<path>.replaced-<timestamp>` (a free name); return the new path."""
    path = Path(path)
    target = claim_unique(path.with_name(f"{path.name}{REPLACED}{stamp or timestamp()}"))
    try:
        _install(path, target)
    except BaseException:
        os.rmdir(target)
        raise
    return target


def is_replaced(name: str) -> bool:
    """Whether a folder name is one that :func:`move_aside` gave."""
    return REPLACED in name


class StagingFolder:
    """``with StagingFolder(final) as tmp:`` write into `tmp`; on success it becomes `final`.

    On an error inside the block the staging folder is removed. After the block, ``.final`` is
    where the folder ended up (with ``unique``, possibly ``<final>_2``...) and ``.replaced`` where
    an older folder was moved to (``replace``), or None.
    """

    def __init__(
        self, final: str | os.PathLike, *, replace: bool = False, unique: bool = False, exists_hint: str = "", stamp: str | None = None
    ):
        self.final = Path(final)
        self.stamp = stamp  # of the name an older folder is moved aside to (default: the time of the move)
        self.replace = replace
        self.unique = unique
        self.exists_hint = exists_hint  # appended to the "already exists" message (e.g. "pass --overwrite ...")
        self.replaced: Path | None = None
        self.tmp: Path | None = None

    def _exists_error(self) -> FolderExistsError:
        hint = f": {self.exists_hint}" if self.exists_hint else ": refusing to replace it"
        return FolderExistsError(f"{self.final} already exists{hint}")

    def __enter__(self) -> Path:
        if self.final.exists() and not (self.replace or self.unique):
            raise self._exists_error()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = self.final.parent / f".{self.final.name}{INCOMPLETE}{os.getpid()}-{secrets.token_hex(3)}"
            if claim(tmp):
                break
        self.tmp = tmp
        marker = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "target": str(self.final),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker) + "\n")
        return tmp

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and naming(self.final, exc) is not exc:
                raise naming(self.final, exc) from exc  # numpy, Keras, OpenCV: "[Errno 28]" without a path
            return False
        try:
            (self.tmp / MARKER_FILE).unlink(missing_ok=True)
            self._commit()
        except OSError as error:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise naming(self.final, error) from error
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return False

    def _commit(self) -> None:
        if self.unique:
            self.final = claim_unique(self.final)
            _install(self.tmp, self.final)
            return
        for _ in range(3):  # another run may take the name between the move and the claim
            if self.final.exists():
                if not self.replace:
                    raise self._exists_error()
                self.replaced = move_aside(self.final, self.stamp)
                logger.warning("moved the earlier %s aside to %s", self.final, self.replaced.name)
            if claim(self.final):
                _install(self.tmp, self.final)
                return
        raise self._exists_error()


def staging_folder(
    final: str | os.PathLike, replace: bool = False, unique: bool = False, exists_hint: str = "", stamp: str | None = None
) -> StagingFolder:
    """A :class:`StagingFolder` (a context manager yielding the temporary folder)."""
    return StagingFolder(final, replace=replace, unique=unique, exists_hint=exists_hint, stamp=stamp)


# --------------------------------------------------------------------------------------------
# Staging folders left behind by killed runs
# --------------------------------------------------------------------------------------------


@dataclass
class StaleFolder:
    path: Path
    pid: int | None
    host: str | None
    started: float
    removable: bool  # proven stale: written on this host by a process that no longer runs

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        who = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        if self.host and self.host != socket.gethostname():
            who += f" on {self.host}"
        return f"{self.path} (left by {who}, started {when})"


def pid_running(pid: int) -> bool:
    """Whether a process of this host with `pid` runs (someone else's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def _staging_info(path: Path) -> StaleFolder | None:
    match = _STAGING_RE.match(path.name) or _LEGACY_RE.match(path.name)
    if match is None or not path.is_dir():
        return None
    pid, host, started = int(match["pid"]), None, path.stat().st_mtime
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
        pid, host, started = int(marker["pid"]), str(marker["host"]), float(marker["started"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    this_host = host in (None, socket.gethostname())
    if this_host:
        if pid == os.getpid() or pid_running(pid):
            return None  # a run in progress
        return StaleFolder(path, pid, host, started, removable=True)
    # Another host's process cannot be checked: only report what is older than this process.
    if started >= PROCESS_STARTED:
        return None
    return StaleFolder(path, pid, host, started, removable=False)


def stale_staging(root: str | os.PathLike, depth: int = 4) -> list[StaleFolder]:
    """Staging folders under `root` (at most `depth` levels down) whose writer no longer runs."""
    root = Path(root)
    found: list[StaleFolder] = []
    if not root.is_dir():
        return found

    def walk(folder: Path, level: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            if child.name.startswith("."):
                stale = _staging_info(child)
                if stale is not None:
                    found.append(stale)
            elif level < depth and not is_replaced(child.name):
                walk(child, level + 1)

    walk(root, 1)
    return found


def report_stale_staging(roots, clean: bool = False, depth: int = 4) -> list[Path]:
    """Warn about (or, with `clean`, remove) staging folders that killed runs left under `roots`;
    return the paths removed."""
    removed = []
    for root in dict.fromkeys(Path(r) for r in roots):
        for stale in stale_staging(root, depth):
            if clean and stale.removable:
                shutil.rmtree(stale.path, ignore_errors=True)
                logger.warning("removed the stale staging folder %s", stale.describe())
                removed.append(stale.path)
            elif clean:
                logger.warning(
                    "kept the staging folder %s: cannot tell whether that host still writes it; remove it by hand if not", stale.describe()
                )
            else:
                logger.warning(
                    "stale staging folder %s: an interrupted run, not a result; pass --clean-stale to remove it", stale.describe()
                )
    return removed


# --------------------------------------------------------------------------------------------
# Output folders given on the command line
# --------------------------------------------------------------------------------------------


def check_writable_dir(path: str | os.PathLike, flag: str) -> None:
    """Raise ValueError naming `flag` when `path` cannot be created or written into."""
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: no permission to write in {existing}")


LOCK_FILE = ".lock"


class FolderInUseError(OSError):
    """Another live process holds the folder's lock."""

    def __str__(self) -> str:  # one line, without the errno prefix
        return self.args[0] if self.args else "folder in use"


class FolderLock:
    """An exclusive lock on a folder, held while a run writes into it (``with FolderLock(folder):``).

    The lock is ``fcntl.flock`` on ``<folder>/.lock``, which also holds the owner's pid, host and
    start time for the message a second run gets. The kernel drops the lock when its process ends,
    however it ends, so a lock left by a killed run never blocks: its file names a pid that no longer
    runs, the next run takes it over (and says so). The file is removed when the lock is released.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run", lock_name: str = LOCK_FILE):
        self.folder = Path(folder)
        self.path = self.folder / lock_name  # another name: a lock on one entry of the folder (export.py's -o)
        self.what = what
        self.handle = None

    def _owner(self) -> str:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        if not isinstance(owner, dict):
            return "another process"
        host = "" if owner.get("host") in (None, socket.gethostname()) else f" on {owner.get('host')}"
        return f"pid {owner.get('pid')}{host}, started {owner.get('started')}"

    def acquire(self) -> FolderLock:
        import fcntl

        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise FolderInUseError(
                    f"{self.folder} is in use by another {self.what} ({self._owner()}): wait for it to end, or use another folder"
                ) from None
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder removed meanwhile
                break
            handle.close()
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            logger.warning("%s: took over the lock of a %s that ended without releasing it (%s)", self.folder, self.what,
                           previous.replace("\n", " "))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": timestamp()}))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.handle.close()  # closing drops the flock
        self.handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
