"""Where the project's own files live."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = PROJECT_ROOT / "checkpoints"
DEFAULT_CHECKPOINT_NAME = "pv3d-tiny-synthheads.safetensors"


def default_checkpoint() -> Path:
    """The embedded default model ($PV3D_DEFAULT_CKPT overrides it)."""
    env = os.environ.get("PV3D_DEFAULT_CKPT")
    return Path(env) if env else CHECKPOINT_DIR / DEFAULT_CHECKPOINT_NAME


def kernel_dir() -> Path:
    """The folder of the kernel sources compiled at run time (``cuda/``; ``$PV3D_CUDA_DIR`` overrides it)."""
    env = os.environ.get("PV3D_CUDA_DIR")
    return Path(env) if env else PROJECT_ROOT / "cuda"
