"""The project's own exceptions: errors a user can cause and fix, and cancellation.

A :class:`UserError` carries a one-line message meant for the person at the keyboard (a missing or
corrupt file, a checkpoint of another architecture, an unwritable output, an option out of range).
The command line catches exactly these once, prints the message and exits with status 2; the viewer
shows the message in its window. Every other exception is a bug in PV3D Studio: it keeps its
traceback, followed by :data:`REPORT_BUG`.

This module imports nothing from the project, so every module may use it.
"""
from __future__ import annotations

#: printed after the traceback of an unexpected error (the CLI and the viewer)
REPORT_BUG = ("This is a bug in PV3D Studio, not something you did wrong. Please report it with the "
              "command or the steps that led to it and the traceback above.")


class UserError(Exception):
    """An error the user can fix; ``str(e)`` is a one-line explanation."""


class UsageError(UserError):
    """An option or argument with a value that cannot be used (out of range, unknown name...)."""


class ConfigError(UsageError):
    """A configuration value (model, training, viewer settings...) of the wrong type or out of range;
    the message names the field. Raised by the config classes' ``validate``, before anything is built."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used (missing, corrupt, unsafe, another architecture)."""


class DatasetError(UserError):
    """A dataset folder or video that cannot be read."""


class ExportError(UserError):
    """An output that cannot be written or produced (unwritable place, nothing to write...)."""


class FaceError(UserError):
    """A photo the face pipeline cannot use (no face, too small, not an image...)."""


class MetricError(UserError):
    """A metric that cannot be computed with what was given (missing weights, too few clips...)."""


class MissingDependency(UserError):
    """An optional package or model file that is not installed; the message says what to install."""


class KernelUnavailable(UserError):
    """``PV3D_KERNELS=on`` asked for the CUDA kernels, and they cannot run these inputs."""


class Cancelled(Exception):
    """A long job stopped because the user cancelled it; nothing partial is left behind."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a batch scheduler's stop, a closed terminal), raised like Ctrl-C's
    KeyboardInterrupt so that the same clean-up runs; ``signum`` says which."""

    def __init__(self, signum: int, name: str = ""):
        super().__init__(f"stopped by {name or f'signal {signum}'}")
        self.signum = signum
        self.name = name or f"signal {signum}"


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


__all__ = ["REPORT_BUG", "UserError", "UsageError", "ConfigError", "CheckpointError", "DatasetError", "ExportError", "FaceError",
           "MetricError", "MissingDependency", "KernelUnavailable", "Cancelled", "Terminated", "one_line"]
