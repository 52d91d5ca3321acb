"""Safe file output, the one place for it: fail early when a path cannot be written, and write through
a temporary file beside the destination that is renamed into place, so a crash, a cancel or a full
disk never leaves a partial file where the user expects a good one.

Every writer of the project (exports, checkpoints, meshes, datasets, reports, viewer settings) goes
through :func:`atomic_write`; each passes its own error class so the user sees the message of the
job at hand (``ExportError`` by default, ``CheckpointError``...). Files get the permissions a plain ``open``
would give them (0666 minus the umask), not the 0600 of :func:`tempfile.mkstemp`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ExportError


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


def check_writable(path, error: type[Exception] = ExportError, folder_ok: bool = False) -> Path:
    """``path`` as a Path once its folder exists and accepts a new file; else ``error`` with a
    one-line reason. A file path that is an existing folder is refused unless ``folder_ok``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() and not folder_ok:
        raise error(f"output path {path} is a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create folder {parent}: {_reason(e)}") from None
    try:  # the only reliable test (root, read-only mounts, special file systems)
        fd, probe = tempfile.mkstemp(prefix=".pv3d-write-test.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"cannot write to {parent}: {_reason(e)}") from None
    return path


def atomic_write(path, write: Callable[[str], None], error: type[Exception] = ExportError) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix, so writers that pick
    the format from the name still work), then rename it over ``path``.

    On any failure, cancellation included, the temporary file is removed and ``path`` is untouched;
    OS errors become ``error`` with a one-line reason, anything else propagates as it is."""
    path = check_writable(path, error)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise error(f"cannot write {path}: {_reason(e)}") from None
        raise
    return path


def atomic_write_bytes(path, data: bytes, error: type[Exception] = ExportError) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write, error)


def atomic_write_text(path, text: str, error: type[Exception] = ExportError) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), error)


def atomic_folder(folder, fill: Callable[[Path], None], error: type[Exception] = ExportError) -> Path:
    """Call ``fill(tmp_dir)`` on a temporary sibling folder, then rename it to ``folder`` (which must
    be absent or empty). On failure the temporary folder is removed and ``folder`` is untouched."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise error(f"output folder {folder} is a file")
        if any(folder.iterdir()):
            raise error(f"output folder {folder} is not empty")
    check_writable(folder, error, folder_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        fill(tmp)
        os.chmod(tmp, DIR_MODE)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise error(f"cannot write {folder}: {_reason(e)}") from None
        raise
    return folder
