"""`pv3d-viewer`: the desktop viewer and editor (glfw window, imgui-bundle UI, render worker thread).

The main thread owns the window, the UI and the GL texture (:mod:`.window`); :class:`.worker.RenderWorker`
owns the model. Widgets write a :class:`.state.ViewerState`; each UI frame maps it to render settings
and asks the worker only when they change (or the timeline plays).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from pv3d_core.rules import SEED, Int

from .messages import EXIT_USAGE, NO_DISPLAY
from .state import RESOLUTIONS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pv3d-viewer", description="Real-time PV3D portrait-video viewer and editor.")
    p.add_argument("--ckpt", help="checkpoint to open (ours .safetensors or an official .ckpt); "
                                  "default: $PV3D_DEFAULT_CKPT, the last one used, or the embedded model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--seed", type=SEED.flag, default=0, help="appearance seed to start with")
    p.add_argument("--resolution", type=Int(min(RESOLUTIONS), max(RESOLUTIONS)).flag, default=None,
                   help=f"output resolution to start with ({min(RESOLUTIONS)}-{max(RESOLUTIONS)})")
    # automation (tests, scripts): a JSON command socket, and the commands that inject faults
    p.add_argument("--control-socket", default=os.environ.get("PV3D_VIEWER_CONTROL"), help=argparse.SUPPRESS)
    p.add_argument("--control-test-faults", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def display_problem() -> str | None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "neither DISPLAY nor WAYLAND_DISPLAY is set"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    why = display_problem()
    if why:
        print(NO_DISPLAY.format(why=why), file=sys.stderr)
        return EXIT_USAGE
    try:
        import glfw  # noqa: F401
        import OpenGL.GL  # noqa: F401
        from imgui_bundle import imgui  # noqa: F401
    except ImportError as e:
        print(f"pv3d-viewer: error: the viewer needs glfw, PyOpenGL and imgui-bundle ({e}); "
              "install them with `pip install 'pv3d-studio[viewer]'`", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="pv3d-viewer: %(message)s")
    from pv3d_core.errors import REPORT_BUG

    from .window import ViewerApp

    app = ViewerApp(args)
    try:
        return app.run()
    except KeyboardInterrupt:     # Ctrl-C in the terminal: run() has already stopped the threads
        return 130
    except Exception:  # noqa: BLE001 - a bug: show everything, say how to report it
        traceback.print_exc()
        print(f"pv3d-viewer: {REPORT_BUG}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
