"""Where the project's own files live, installed or in a source checkout.

Two folders at the top of the source tree travel inside the installed package (pyproject maps them):
``checkpoints/`` (the embedded default model) as ``pv3d_core/checkpoints/`` and ``cuda/`` (the kernel
sources) as ``pv3d_core/kernels/``. :func:`package_file` reads them with :mod:`importlib.resources`
from the installed package, and from the source tree in an editable install or a checkout.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent      # the checkout, when running from one
DEFAULT_CHECKPOINT_NAME = "pv3d-tiny-synthheads.safetensors"

#: installed sub-folder of pv3d_core -> its folder at the top of the source tree
DATA_DIRS = {"checkpoints": "checkpoints", "kernels": "cuda"}


def package_file(folder: str, name: str) -> Path:
    """``pv3d_core/<folder>/<name>`` of the installed package, else ``<source tree>/<DATA_DIRS[folder]>/<name>``.

    The path is returned even when the file is missing (the installed one then), so that callers can
    say where they looked."""
    installed = resources.files("pv3d_core").joinpath(folder, name)
    if installed.is_file():
        return Path(str(installed))
    source = SOURCE_ROOT / DATA_DIRS[folder] / name
    return source if source.is_file() else Path(str(installed))


def default_checkpoint() -> Path:
    """The embedded default model ($PV3D_DEFAULT_CKPT overrides it)."""
    env = os.environ.get("PV3D_DEFAULT_CKPT")
    return Path(env) if env else package_file("checkpoints", DEFAULT_CHECKPOINT_NAME)


def encoder_for(checkpoint) -> Path:
    """Where the portrait encoder of a model checkpoint lives: beside it, ``<stem>-encoder.safetensors``
    (``checkpoints/pv3d-tiny-synthheads-encoder.safetensors`` for the embedded model, so an installed
    package carries it too). The path is returned whether or not the file exists."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}-encoder.safetensors")


def kernel_file(name: str) -> Path:
    """A kernel source compiled at run time (``cuda/`` of the tree, ``pv3d_core/kernels/`` installed);
    ``$PV3D_CUDA_DIR`` overrides the folder."""
    env = os.environ.get("PV3D_CUDA_DIR")
    return Path(env) / name if env else package_file("kernels", name)
