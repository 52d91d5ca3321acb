"""``python -m pv3d_viewer.display_check``: the viewer's two display paths, tried on this machine.

Run by ``pv3d doctor`` as a program of its own (the library never imports the viewer; a GL driver that
crashes takes only this process down). It makes an OpenGL 3.3 core context without showing anything --
a hidden glfw window when there is a display server, else EGL on a GPU (headless; Mesa's llvmpipe
stands in on machines without one) -- and runs the viewer's own :class:`Display` on it:

- host path: a frame uploaded with ``glTexSubImage2D``, read back through the texture and compared,
  then the milliseconds per frame (upload + ``glFinish``);
- interop path, when there is a CUDA device: the same frame made on the GPU goes through
  :class:`Display`'s interop path, which checks itself at first use (read-back against the host copy)
  and falls back to the host path with a reason; then ms per frame for interop (copy + stream sync +
  ``glFinish``) and for the host path given the same CUDA frame (device-to-host copy + upload).

Prints one JSON object with ``--json``, else a few lines. Exit status 0 when a context was made (whatever
the interop verdict), 3 when none could be.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

EXIT_NO_CONTEXT = 3


# ---------------------------------------------------------------------------------------------- contexts
def glfw_context() -> dict:
    """A hidden 3.3 core glfw window, current. Raises RuntimeError when there is none to be had."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("no display server ($DISPLAY and $WAYLAND_DISPLAY are unset)")
    import glfw

    if not glfw.init():
        raise RuntimeError("glfw could not initialise")
    glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
    glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
    glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
    glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
    glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, glfw.TRUE)
    window = glfw.create_window(64, 64, "pv3d display check", None, None)
    if not window:
        glfw.terminate()
        raise RuntimeError("glfw could not create a hidden OpenGL 3.3 window")
    glfw.make_context_current(window)
    return {"kind": "glfw (hidden window)", "close": lambda: (glfw.destroy_window(window), glfw.terminate())}


def egl_context(prefer_nvidia: bool) -> dict:
    """A surfaceless 3.3 core context on an EGL device (headless). PyOpenGL must have been set to EGL
    (``PYOPENGL_PLATFORM=egl``) before its first import."""
    import ctypes

    from OpenGL import EGL
    from OpenGL.EGL.EXT.device_enumeration import eglQueryDevicesEXT
    from OpenGL.EGL.EXT.platform_base import eglGetPlatformDisplayEXT

    platform_device = 0x313F                          # EGL_PLATFORM_DEVICE_EXT
    devices = (EGL.EGLDeviceEXT * 16)()
    count = EGL.EGLint()
    if not eglQueryDevicesEXT(16, devices, ctypes.pointer(count)) or count.value < 1:
        raise RuntimeError("EGL lists no device")
    errors, candidates = [], []
    for i in range(count.value):
        try:
            dpy = eglGetPlatformDisplayEXT(platform_device, devices[i], None)
            major, minor = EGL.EGLint(), EGL.EGLint()
            if not EGL.eglInitialize(dpy, ctypes.pointer(major), ctypes.pointer(minor)):
                raise RuntimeError("eglInitialize failed")
            vendor = (EGL.eglQueryString(dpy, EGL.EGL_VENDOR) or b"?").decode(errors="replace")
            candidates.append((prefer_nvidia and "NVIDIA" not in vendor, i, dpy, vendor))
        except Exception as e:  # noqa: BLE001 - try the next device
            errors.append(f"device {i}: {type(e).__name__}: {e}")
    for _, i, dpy, vendor in sorted(candidates, key=lambda c: (c[0], c[1])):
        try:
            if not EGL.eglBindAPI(EGL.EGL_OPENGL_API):
                raise RuntimeError("eglBindAPI(OpenGL) failed")
            attribs = (EGL.EGLint * 7)(EGL.EGL_CONTEXT_MAJOR_VERSION, 3, EGL.EGL_CONTEXT_MINOR_VERSION, 3,
                                       EGL.EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL.EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
                                       EGL.EGL_NONE)
            ctx = EGL.eglCreateContext(dpy, None, EGL.EGL_NO_CONTEXT, attribs)   # no config: surfaceless
            if not ctx or not EGL.eglMakeCurrent(dpy, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, ctx):
                raise RuntimeError("no surfaceless OpenGL 3.3 core context")

            def close(dpy=dpy, ctx=ctx):
                EGL.eglMakeCurrent(dpy, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
                EGL.eglDestroyContext(dpy, ctx)
                EGL.eglTerminate(dpy)
            return {"kind": f"EGL device {i} ({vendor}, surfaceless)", "close": close}
        except Exception as e:  # noqa: BLE001
            errors.append(f"device {i} ({vendor}): {type(e).__name__}: {e}")
    raise RuntimeError("; ".join(errors) or "no EGL device gave a context")


def make_context(kind: str, prefer_nvidia: bool) -> dict:
    """``kind`` = glfw | egl | auto (glfw when a display server is there, else EGL)."""
    errors = []
    if kind in ("auto", "glfw"):
        try:
            return glfw_context()
        except Exception as e:  # noqa: BLE001
            errors.append(f"glfw: {e}")
            if kind == "glfw":
                raise RuntimeError("; ".join(errors)) from None
    os.environ["PYOPENGL_PLATFORM"] = "egl"          # before PyOpenGL is imported
    if "OpenGL" in sys.modules and sys.modules["OpenGL"].__dict__.get("_platform_name", "egl") != "egl":
        raise RuntimeError("; ".join(errors + ["egl: PyOpenGL was already loaded for another platform"]))
    try:
        return egl_context(prefer_nvidia)
    except Exception as e:  # noqa: BLE001
        errors.append(f"egl: {type(e).__name__}: {e}")
    raise RuntimeError("; ".join(errors))


# ---------------------------------------------------------------------------------------------- checks
def _median_ms(fn, frames: int) -> float:
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(size: int, frames: int, context: str) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    out: dict = {"size": size, "frames": frames}
    try:
        ctx = make_context(context, prefer_nvidia=cuda)
    except Exception as e:  # noqa: BLE001
        out["context"] = {"error": str(e)}
        return out
    import OpenGL.GL as gl

    from .display import Display, read_texture

    def gl_string(name):
        v = gl.glGetString(name)
        return v.decode(errors="replace") if isinstance(v, bytes) else str(v)

    out["context"] = {"kind": ctx["kind"], "renderer": gl_string(gl.GL_RENDERER), "version": gl_string(gl.GL_VERSION)}
    try:
        frame = torch.randint(0, 256, (size, size, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        frame[..., 3] = 255
        host = Display()
        host.upload(frame)
        gl.glFinish()
        same = bool((read_texture(host.texture, size, size) == frame.numpy()).all())
        out["host"] = {"readback_matches": same, "ms": _median_ms(lambda: (host.upload(frame), gl.glFinish()), frames)}
        host.close()
        if not cuda:
            why = "is a CPU build" if not torch.version.cuda else f"(CUDA {torch.version.cuda}) sees none"
            out["interop"] = {"status": "skipped", "reason": f"no CUDA device: torch {torch.__version__} {why}"}
            return out
        dev = torch.device("cuda")
        gpu = frame.to(dev)
        ready = torch.cuda.Event()
        ready.record()
        disp = Display()
        disp.upload(gpu, ready)                        # the first use checks itself against the host path
        gl.glFinish()
        info = {"status": "ok" if disp.path == "interop" else "fallback", "path": disp.path, "reason": disp.reason}
        if disp.path == "interop":
            same = bool((read_texture(disp.texture, size, size) == frame.numpy()).all())
            info["readback_matches"] = same

            def interop_frame():
                ev = torch.cuda.Event()
                ev.record()
                disp.upload(gpu, ev)
                torch.cuda.synchronize(dev)
                gl.glFinish()
            info["ms"] = _median_ms(interop_frame, frames)
        disp.close()
        os.environ["PV3D_DISPLAY"] = "host"
        forced = Display()
        os.environ.pop("PV3D_DISPLAY")

        def host_frame():
            ev = torch.cuda.Event()
            ev.record()
            forced.upload(gpu, ev)
            gl.glFinish()
        host_frame()
        info["host_ms_for_cuda_frame"] = _median_ms(host_frame, frames)
        forced.close()
        out["interop"] = info
    except Exception as e:  # noqa: BLE001 - reported, not raised: the caller is a diagnosis
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        ctx["close"]()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pv3d_viewer.display_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", choices=("auto", "glfw", "egl"), default="auto")
    ap.add_argument("--size", type=int, default=512, help="frame side in pixels (default 512)")
    ap.add_argument("--frames", type=int, default=30, help="frames timed per path (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.size, args.frames, args.context)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return EXIT_NO_CONTEXT if "error" in out.get("context", {}) else 0


if __name__ == "__main__":
    sys.exit(main())
