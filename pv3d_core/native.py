"""C++ sources of ``cuda/`` built at first use into shared libraries with a C interface (for ctypes).

No PyTorch headers: a build takes seconds and has no ABI ties to PyTorch. The compiler is ``$CXX``, else
``g++``/``c++``; the first flag set of :data:`FLAG_SETS` that compiles and loads is used
(``-O3 -march=native -fopenmp`` first). A library is cached on disk, keyed by the source, flags,
compiler and CPU, in ``$PV3D_KERNEL_CACHE`` or ``$XDG_CACHE_HOME/pv3d-studio/kernels`` (default
``~/.cache/pv3d-studio/kernels``), written to a temporary file and renamed into place. A compile logs one
warning-level line so that the pause is explained. OpenMP resolves to the runtime PyTorch already loaded.

Users: :mod:`pv3d_core.render.cpu_kernels` (the fused tri-plane renderer) and
:mod:`pv3d_core.nn.winograd` (Winograd 3x3 convolutions).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import kernel_file

logger = logging.getLogger(__name__)

ENV_CACHE = "PV3D_KERNEL_CACHE"

# Flag sets tried in order: the first that compiles is used.
FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3"],
)
COMMON_FLAGS = ["-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden"]


class NativeUnavailable(RuntimeError):
    """A C++ source cannot be built or loaded here (the message says why)."""


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pv3d-studio" / "kernels"


def compiler() -> str | None:
    """The C++ compiler to use: ``$CXX``, else g++, else c++ (None if there is none)."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags (a cache shared by machines of
    different CPUs must not hand one the other's binary)."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    parts.append(line.strip())
                    if len(parts) > 3:
                        break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


@dataclass
class Built:
    """A loaded library: its ctypes handle, file, the flags it was built with, the compiler's version
    line and the seconds its compile took (0 when it came from the cache)."""
    cdll: ctypes.CDLL
    path: Path
    flags: list
    compiler_version: str
    seconds: float

    @property
    def openmp(self) -> bool:
        return "-fopenmp" in self.flags

    @property
    def native(self) -> bool:
        return "-march=native" in self.flags

    def label(self) -> str:
        """"g++ 12.2.0, -march=native, OpenMP"."""
        arch = "native" if self.native else "generic"
        par = "OpenMP" if self.openmp else "1 thread"
        words = self.compiler_version.split()
        name = f"{words[0]} {words[-1]}" if len(words) > 1 else (words[0] if words else "?")
        return f"{name}, -march={arch}, {par}"


def build(source_name: str, stem: str, defines: list[str] = (), what: str = "CPU kernels", check=None) -> Built:
    """Build (or load from the cache) ``cuda/<source_name>`` as ``<stem>-<hash>.so``.

    ``check(cdll)`` may raise OSError or :class:`NativeUnavailable` to refuse a library (then the next
    flag set is tried). Raises :class:`NativeUnavailable` with the reason when none works."""
    cxx = compiler()
    if cxx is None:
        raise NativeUnavailable("no C++ compiler found (install g++, or set $CXX)")
    src = kernel_file(source_name)
    if not src.is_file():
        raise NativeUnavailable(f"kernel source not found at {src} (set $PV3D_CUDA_DIR)")
    text = src.read_text()
    version = compiler_version(cxx)
    out_dir = cache_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NativeUnavailable(f"cannot create the kernel cache {out_dir}: {e}") from None
    errors = []
    for flags in FLAG_SETS:
        args = [*flags, *COMMON_FLAGS, *defines]
        key = "\0".join([text, *args, version, cpu_signature()])
        path = out_dir / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
        seconds = 0.0
        if not path.exists():
            logger.warning("Compiling the %s for this machine (once, a few seconds; cached in %s)", what, out_dir)
            t0 = time.perf_counter()
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                proc = subprocess.run([cxx, *args, str(src), "-o", str(tmp)], capture_output=True, text=True,
                                      timeout=600)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{' '.join(flags)}: {e}")
                continue
            if proc.returncode != 0:
                tmp.unlink(missing_ok=True)
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                errors.append(f"{' '.join(flags)}: {last}")
                continue
            os.replace(tmp, path)
            seconds = time.perf_counter() - t0
            logger.info("%s compiled in %.1f s (%s)", what, seconds, " ".join(flags))
        try:
            cdll = ctypes.CDLL(str(path))
            if check is not None:
                check(cdll)
            return Built(cdll, path, list(flags), version, seconds)
        except (OSError, NativeUnavailable) as e:   # a binary this CPU cannot load: try the next flags
            errors.append(f"{' '.join(flags)}: {e}")
    raise NativeUnavailable(f"the {what} did not compile (" + "; ".join(errors[-2:]) + ")")
