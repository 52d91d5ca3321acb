"""Frames into a GL texture: one class, two paths.

* ``interop`` (CUDA frames only): no pixel touches host memory. The worker converts each frame to RGBA
  on the render's stream and records a CUDA event after it. The display's own CUDA stream waits for
  that event (on the device: the UI thread never blocks on the render), the frame is marked as in use on
  that stream (``record_stream``: the caching allocator will not give its memory to the next render
  before the copy ran), and the texture, registered once with CUDA (write-discard), is mapped, its
  array fetched, the frame copied device to device with ``cudaMemcpy2DToArrayAsync`` and the texture
  unmapped, all on the display stream; unmapping orders GL's later reads of the texture after the copy.
  The copy runs on a stream of its own rather than the render's, because by the time the UI thread
  takes a frame the worker may have queued the next render on its stream: the copy, and GL's draw
  after it, would wait for that render.
  At first use the frame is read back through the texture (``glGetTexImage``) and compared byte for
  byte with the frame's host copy, i.e. with what the host path would show. A difference, or any
  failing step (no cuda-python, a GL context that is not on the CUDA device, a failed call), and the
  display uses the host path from then on; :attr:`Display.reason` says why.
* ``host``: ``glTexSubImage2D`` of RGBA8 (RGB uploads are several times slower) into a texture
  allocated once per size; a CUDA frame is copied to the host first (after its event).

``PV3D_DISPLAY=host`` forces the host path. Needs a current GL context.
"""
from __future__ import annotations

import os
import time

import numpy as np
import OpenGL.GL as gl
import torch

from .worker import to_rgba


class InteropMismatch(RuntimeError):
    """The texture written through CUDA-GL interop does not read back as the frame."""


class CudaGLInterop:
    """cuda-python runtime bindings around one registered GL texture."""

    def __init__(self, texture: int):
        from cuda.bindings import runtime as rt  # ImportError when cuda-python is not installed

        self.rt = rt
        self.resource = None
        err, count, _devices = rt.cudaGLGetDevices(1, rt.cudaGLDeviceList.cudaGLDeviceListAll)
        self._check(err, "cudaGLGetDevices")
        if count < 1:
            raise RuntimeError("the GL context is not on a CUDA device")
        err, res = rt.cudaGraphicsGLRegisterImage(
            int(texture), gl.GL_TEXTURE_2D, rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard)
        self._check(err, "cudaGraphicsGLRegisterImage")
        self.resource = res

    def _check(self, err, what: str) -> None:
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")

    def copy(self, rgba: torch.Tensor, stream: int | None = None) -> None:
        """Copy a contiguous (H, W, 4) uint8 CUDA tensor into the texture (on torch's current stream)."""
        rt = self.rt
        h, w = rgba.shape[:2]
        if stream is None:
            stream = torch.cuda.current_stream(rgba.device).cuda_stream
        (err,) = rt.cudaGraphicsMapResources(1, self.resource, stream)
        self._check(err, "cudaGraphicsMapResources")
        try:
            err, array = rt.cudaGraphicsSubResourceGetMappedArray(self.resource, 0, 0)
            self._check(err, "cudaGraphicsSubResourceGetMappedArray")
            (err,) = rt.cudaMemcpy2DToArrayAsync(array, 0, 0, rgba.data_ptr(), w * 4, w * 4, h,
                                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)
            self._check(err, "cudaMemcpy2DToArrayAsync")
        finally:
            (err2,) = rt.cudaGraphicsUnmapResources(1, self.resource, stream)
        self._check(err2, "cudaGraphicsUnmapResources")

    def close(self) -> None:
        if self.resource is not None:
            self.rt.cudaGraphicsUnregisterResource(self.resource)
            self.resource = None


class Display:
    def __init__(self):
        self.texture = int(gl.glGenTextures(1))
        self.size: tuple[int, int] | None = None
        self.force_host = os.environ.get("PV3D_DISPLAY", "").lower() == "host"
        self.path = "host"
        self.reason = "forced by PV3D_DISPLAY=host" if self.force_host else "no CUDA frame yet"
        self._interop: CudaGLInterop | None = None
        self._interop_failed = self.force_host
        self._checked = False                          # the interop path read back as the host path once
        self._stream = None                            # the display's CUDA stream (interop copies)
        self.uploads = 0
        self.last_upload_ms = 0.0
        self._last: torch.Tensor | None = None        # the last frame shown (RGBA, where it was rendered)
        self._last_ready = None                       # its CUDA event
        self._last_host: np.ndarray | None = None     # its host copy, when the host path made one

    @property
    def ready(self) -> bool:
        return self.size is not None

    def describe(self) -> str:
        """For the status bar: "interop", "host", or "host (why not interop)" once interop was refused."""
        return f"{self.path} ({self.reason})" if self.path == "host" and self._interop_failed else self.path

    def _allocate(self, w: int, h: int) -> None:
        self._release_interop()   # the texture's storage changes: register it again
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.texture)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)
        gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA8, w, h, 0, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, None)
        self.size = (w, h)

    def upload(self, image: torch.Tensor, ready=None) -> None:
        """Show a frame: (H, W, 4) RGBA (or (H, W, 3), converted here) uint8. ``ready``: a CUDA event
        recorded on the render's stream after the frame was written (the worker's), waited for on the
        device before the copy."""
        t0 = time.perf_counter()
        h, w = int(image.shape[0]), int(image.shape[1])
        if self.size != (w, h):
            self._allocate(w, h)
        rgba = image
        if not (image.shape[2] == 4 and image.is_contiguous()):
            rgba = to_rgba(image)    # made here, on this thread's current stream: wait for that, not the event
            ready = None
        done = False
        if rgba.is_cuda and not self._interop_failed:
            try:
                self._upload_interop(rgba, ready)
                self.path, self.reason, done = "interop", "CUDA-GL interop, checked against the host path", True
            except Exception as e:  # noqa: BLE001 - any failed step means the host path
                self._interop_failed = True
                if isinstance(e, InteropMismatch):
                    self.reason = f"CUDA-GL interop failed its first-frame check: {e}"
                else:
                    self.reason = f"CUDA-GL interop unavailable: {type(e).__name__}: {e}"
                self._release_interop()
        host = None
        if not done:
            host = self._to_host(rgba, ready)
            gl.glBindTexture(gl.GL_TEXTURE_2D, self.texture)
            gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 4)
            gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, w, h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, host)
            self.path = "host"
        self._last, self._last_ready, self._last_host = rgba, ready, host
        self.uploads += 1
        self.last_upload_ms = (time.perf_counter() - t0) * 1e3

    def _upload_interop(self, rgba: torch.Tensor, ready) -> None:
        """The frame into the texture through CUDA, on the display stream, ordered after ``ready``."""
        if self._interop is None:
            self._interop = CudaGLInterop(self.texture)
        stream = self._display_stream(rgba.device)
        if ready is not None:
            stream.wait_event(ready)
        else:
            stream.wait_stream(torch.cuda.current_stream(rgba.device))
        rgba.record_stream(stream)
        self._interop.copy(rgba, stream.cuda_stream)
        if not self._checked:
            stream.synchronize()                       # once: the copy must be done before GL reads it
            self._compare_readback(rgba)
            self._checked = True

    def _display_stream(self, device):
        if self._stream is None or self._stream.device != torch.device(device):
            self._stream = torch.cuda.Stream(device)
        return self._stream

    def _compare_readback(self, rgba: torch.Tensor) -> None:
        """Raise :class:`InteropMismatch` unless the texture reads back as the frame's host copy."""
        expected = rgba.cpu().numpy()
        h, w = expected.shape[:2]
        got = read_texture(self.texture, w, h)
        if got.shape != expected.shape:
            raise InteropMismatch(f"the texture read back as {got.shape}, the frame is {expected.shape}")
        bad = (got != expected).any(-1)
        n = int(bad.sum())
        if n:
            worst = int(np.abs(got.astype(np.int16) - expected.astype(np.int16)).max())
            raise InteropMismatch(f"the texture read back differs from the frame in {n} of {h * w} pixels "
                                  f"(by up to {worst}/255)")

    @staticmethod
    def _to_host(rgba: torch.Tensor, ready) -> np.ndarray:
        if rgba.is_cuda and ready is not None:
            torch.cuda.current_stream(rgba.device).wait_event(ready)
        return rgba.cpu().numpy()

    def last_frame(self) -> np.ndarray | None:
        """(H, W, 3) uint8 host copy of the frame shown last (made now on the interop path), or None."""
        if self._last is None:
            return None
        if self._last_host is None:
            self._last_host = self._to_host(self._last, self._last_ready)
        return self._last_host[:, :, :3]

    def _release_interop(self) -> None:
        """Unregister the CUDA-GL resource once pending copies are done; a failure there must not stop the
        host path or shutdown."""
        if self._interop is not None:
            try:
                if self._stream is not None:
                    self._stream.synchronize()
                self._interop.close()
            except Exception:  # noqa: BLE001
                pass
            self._interop = None

    def close(self) -> None:
        self._release_interop()
        gl.glDeleteTextures([self.texture])


def read_texture(texture: int, width: int, height: int) -> np.ndarray:
    """(H, W, 4) uint8 contents of an RGBA8 texture, first row first (as uploaded)."""
    gl.glBindTexture(gl.GL_TEXTURE_2D, texture)
    gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
    data = gl.glGetTexImage(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE)
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    return arr.reshape(height, width, 4)


def read_framebuffer(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 screenshot of the current framebuffer (top row first)."""
    gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
    data = gl.glReadPixels(0, 0, width, height, gl.GL_RGB, gl.GL_UNSIGNED_BYTE)
    arr = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    return np.ascontiguousarray(arr[::-1])
