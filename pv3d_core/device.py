"""The torch device a user asks for by name (the CLI's and the viewer's ``--device``)."""
from __future__ import annotations

from .errors import UsageError


def pick_device(name: str | None):
    """``auto`` or None (a CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:N``."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is available")
    return dev
