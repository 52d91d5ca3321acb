"""`pv3d-viewer`: the desktop viewer and editor (glfw window, imgui-bundle UI, render worker thread).

The main thread owns the window, the UI and the GL texture; :class:`viewer.worker.RenderWorker` owns
the model. Widgets write a :class:`viewer.state.ViewerState`; each UI frame maps it to render
settings and asks the worker only when they change (or the timeline plays).
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_USAGE = 2
NO_DISPLAY = ("pv3d-viewer: error: no display to open a window on ({why}). "
              "Render without a window with the command line instead, e.g. "
              "`pv3d generate --seeds 0 -o out.mp4` (see `pv3d generate --help`).")
PREVIEW_HOLD_S = 0.25          # input pause after which the full frame replaces the preview
RENDER_AHEAD = 12              # playback frames rendered ahead of the playhead
JOB_REDRAW_S = 0.1             # while only a background job runs, redraw its progress this often


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pv3d-viewer", description="Real-time PV3D portrait-video viewer and editor.")
    p.add_argument("--ckpt", help="checkpoint to open (ours .safetensors or an official .ckpt); "
                                  "default: $PV3D_DEFAULT_CKPT, the last one used, or the embedded model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--seed", type=int, default=0, help="appearance seed to start with")
    p.add_argument("--resolution", type=int, default=None, help="output resolution to start with")
    p.add_argument("--control-socket", default=os.environ.get("PV3D_VIEWER_CONTROL"), help=argparse.SUPPRESS)
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
    from .viewer_app import ViewerApp

    app = ViewerApp(args)
    try:
        return app.run()
    except KeyboardInterrupt:     # Ctrl-C in the terminal: run() has already stopped the threads
        return 130


if __name__ == "__main__":
    sys.exit(main())
