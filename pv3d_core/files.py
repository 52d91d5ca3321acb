"""Safe file output, the one place for it: fail early when a path cannot be written, and write through
a temporary file beside the destination that is renamed into place, so a crash, a cancel or a full
disk never leaves a partial file where the user expects a good one.

Every writer of the project (exports, checkpoints, meshes, datasets, reports, viewer settings) goes
through :func:`atomic_write`; each passes its own error class so the user sees the message of the
job at hand (``ExportError`` by default, ``CheckpointError``...). New files get the permissions a plain
``open`` would give them (0666 minus the umask), not the 0600 of :func:`tempfile.mkstemp`; a file that
is replaced keeps its mode (and, where allowed, its owner).

Temporaries are named ``.<name>.pv3d-tmp.<random><suffix>`` (folders: ``.<name>.pv3d-tmp.<random>``)
and hold an exclusive ``flock`` while they are being written. A process killed by a signal it cannot
handle (SIGKILL, power loss) leaves its temporary behind, unlocked: the next run that writes into that
folder removes it (:func:`remove_stale_temporaries`). Only names of this form are ever removed, only when
no process holds their lock, and only once they are :data:`STALE_AFTER_S` seconds old.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable

from .errors import ExportError

try:
    import fcntl
except ImportError:          # Windows: no flock; temporaries are then never swept (liveness unknown)
    fcntl = None

log = logging.getLogger(__name__)

#: the marker in every temporary name of ours
TMP_MARK = ".pv3d-tmp."
#: a temporary younger than this is never swept (covers the instant between its creation and its lock)
STALE_AFTER_S = 60.0
_TMP_NAME = re.compile(r"^\.(?:.*\.)?pv3d-tmp\.[a-z0-9_]{8}(?:\.[^/]*)?$")
_STEM_MAX = 120              # keeps temporary names under the 255-byte limit of most file systems


def _read_umask() -> int:
    try:                                   # Linux: read it without changing it (threads are about)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is the name of one of our temporaries (see the module doc)."""
    return bool(_TMP_NAME.match(name))


def _tmp_prefix(name: str) -> str:
    return f".{name[:_STEM_MAX]}{TMP_MARK}"


def _lock(fd: int) -> bool:
    """Take the exclusive lock that marks a temporary as in use; False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:          # a file system without flock: the age rule alone protects it
        return True


_STOP_SIGNALS = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}


@contextlib.contextmanager
def signals_deferred():
    """Within: Ctrl-C, SIGTERM and SIGHUP wait (blocked in this thread) and arrive right after.

    For the few steps that must not be cut in two: creating a temporary and taking its lock (an
    interrupt between the two would leave it behind), starting a child process (an interrupt inside
    Popen leaves the child running, unknown to the caller, writing into a file already removed). A
    child started within inherits the blocked mask; ours are only ever stopped with SIGKILL or EOF."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_swept: set = set()
_swept_lock = threading.Lock()


def remove_stale_temporaries(folder, min_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove our temporaries in ``folder`` that no live process is writing (unlocked) and that are
    at least ``min_age_s`` old; return what was removed. Never raises; never follows links."""
    if fcntl is None:
        return []
    import time

    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    now = time.time()
    for e in entries:
        if not is_temporary_name(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode)) or now - st.st_mtime < min_age_s:
                continue
            fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if is_dir else 0))
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue               # being written right now
            if is_dir:
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    for p in removed:
        log.info("removed a stale temporary left by an interrupted run: %s", p)
    return removed


def _sweep_once(folder: Path) -> None:
    """:func:`remove_stale_temporaries` the first time this process writes into ``folder``."""
    try:
        key = os.path.realpath(folder)
    except OSError:
        return
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale_temporaries(folder)


def check_writable(path, error: type[Exception] = ExportError, folder_ok: bool = False) -> Path:
    """``path`` as a Path once its folder exists and accepts a new file; else ``error`` with a
    one-line reason. A file path that is an existing folder is refused unless ``folder_ok``.
    Stale temporaries of earlier, killed runs in that folder are removed on the way."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() and not folder_ok:
        raise error(f"output path {path} is a folder")
    if path.exists() and not folder_ok and not path.is_file():
        raise error(f"output path {path} is not a regular file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create folder {parent}: {_reason(e)}") from None
    try:  # the only reliable test (root, read-only mounts, special file systems)
        with signals_deferred():
            fd, probe = tempfile.mkstemp(prefix=TMP_MARK, suffix=".probe", dir=parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise error(f"cannot write to {parent}: {_reason(e)}") from None
    _sweep_once(parent)
    return path


def _mode_of(path: Path) -> tuple[int, int, int] | None:
    """(mode, uid, gid) of an existing regular file, which a replacement keeps."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) if stat.S_ISREG(st.st_mode) else None


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[str], None], error: type[Exception] = ExportError) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix, so writers that pick
    the format from the name still work), flush it to disk, then rename it over ``path``.

    On any failure, cancellation and SIGTERM included, the temporary file is removed and ``path`` is
    untouched; OS errors (a full disk...) become ``error`` with a one-line reason, anything else
    propagates as it is. A replaced file keeps its permissions."""
    path = check_writable(path, error)
    with signals_deferred():       # never a temporary without its lock and its clean-up below
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.stem), suffix=path.suffix or ".tmp", dir=path.parent)
        _lock(fd)                  # held until the end: the temporary is alive
    try:
        write(tmp)
        _fsync(tmp)                # a full disk may only show here (delayed allocation, NFS)
        old = _mode_of(path)
        os.chmod(tmp, old[0] if old else FILE_MODE)
        if old and (old[1], old[2]) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, old[1], old[2])
            except OSError:
                pass
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise error(f"cannot write {path}: {_reason(e)}") from None
        raise
    finally:
        os.close(fd)
    return path


def atomic_write_bytes(path, data: bytes, error: type[Exception] = ExportError) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write, error)


def atomic_write_text(path, text: str, error: type[Exception] = ExportError) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), error)


def check_empty_folder(folder, error: type[Exception] = ExportError) -> Path:
    """``folder`` when it is absent or an empty folder whose parent accepts new entries; else ``error``.
    Creates nothing but the parent folders."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir():
            raise error(f"output folder {folder} is a file" if folder.is_file() else
                        f"output folder {folder} is not a folder")
        if any(folder.iterdir()):
            raise error(f"output folder {folder} is not empty (choose a new folder, or empty it)")
    check_writable(folder, error, folder_ok=True)
    return folder


def atomic_folder(folder, fill: Callable[[Path], None], error: type[Exception] = ExportError) -> Path:
    """Call ``fill(tmp_dir)`` on a temporary sibling folder, then rename it to ``folder`` (which must
    be absent or empty). On failure the temporary folder is removed and ``folder`` is untouched."""
    folder = check_empty_folder(folder, error)
    with signals_deferred():
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(folder.name), dir=folder.parent))
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        _lock(fd)
    try:
        fill(tmp)
        mode = stat.S_IMODE(os.stat(folder).st_mode) if folder.is_dir() else DIR_MODE
        os.chmod(tmp, mode)
        if folder.exists():
            if any(folder.iterdir()):             # filled by someone else meanwhile
                raise error(f"output folder {folder} is not empty (something wrote into it during the run)")
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise error(f"cannot write {folder}: {_reason(e)}") from None
        raise
    finally:
        os.close(fd)
    return folder
