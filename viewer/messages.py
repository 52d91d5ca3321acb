"""What the viewer tells the user on the terminal and in the window, shared by its modules."""
from __future__ import annotations

EXIT_USAGE = 2
NO_DISPLAY = ("pv3d-viewer: error: no display to open a window on ({why}). "
              "Render without a window with the command line instead, e.g. "
              "`pv3d generate --seeds 0 -o out.mp4` (see `pv3d generate --help`).")


def missing_model_notice(path) -> str:
    where = f" ({path})" if path else ""
    return ("No model loaded: the embedded default checkpoint is missing" + where + ".\n"
            "Get one: train it (see README.md), or convert an official PV3D checkpoint with "
            "`pv3d convert official.ckpt model.safetensors`.\n"
            "Then start `pv3d-viewer --ckpt model.safetensors`, set $PV3D_DEFAULT_CKPT, or drop the "
            "checkpoint file onto this window.")
