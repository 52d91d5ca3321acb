"""Frames into a GL texture: one class, two paths.

* ``interop`` (CUDA frames only): the texture is registered once with CUDA (write-discard); per
  frame the resource is mapped, its array fetched, the RGBA tensor copied device-to-device with
  ``cudaMemcpy2DToArrayAsync`` on torch's current stream, and unmapped. No host round trip: the
  frame arrives as RGBA made on the render's stream with an event marking it ready, the copy's
  stream waits for that event on the device, and no host copy is kept (:meth:`Display.last_frame`
  makes one only when asked). Chosen only when every step succeeds on the first frame; any failure
  falls back to the host path (the reason is kept in :attr:`Display.reason`).
* ``host``: ``glTexSubImage2D`` of RGBA8 (RGB uploads are several times slower) into a texture
  allocated once per size.

``PV3D_DISPLAY=host`` forces the host path. Needs a current GL context.
"""
from __future__ import annotations

import os

import numpy as np
import OpenGL.GL as gl
import torch

from .worker import to_rgba


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
        self.uploads = 0
        self.last_upload_ms = 0.0
        self._last: torch.Tensor | None = None        # the last frame shown (RGBA, where it was rendered)
        self._last_host: np.ndarray | None = None     # its host copy, when the host path made one

    @property
    def ready(self) -> bool:
        return self.size is not None

    def _allocate(self, w: int, h: int) -> None:
        if self._interop is not None:
            self._interop.close()
            self._interop = None
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
        import time

        t0 = time.perf_counter()
        h, w = int(image.shape[0]), int(image.shape[1])
        if self.size != (w, h):
            self._allocate(w, h)
        rgba = image if image.shape[2] == 4 and image.is_contiguous() else to_rgba(image)
        done = False
        if rgba.is_cuda and not self._interop_failed:
            try:
                if self._interop is None:
                    self._interop = CudaGLInterop(self.texture)
                stream = torch.cuda.current_stream(rgba.device)
                if ready is not None:
                    stream.wait_event(ready)
                self._interop.copy(rgba, stream.cuda_stream)
                self.path, self.reason, done = "interop", "CUDA-GL interop", True
            except Exception as e:  # noqa: BLE001 - any failed step means the host path
                self._interop_failed = True
                self.reason = f"interop unavailable ({type(e).__name__}: {e})"
                self._release_interop()
        host = None
        if not done:
            host = rgba.cpu().numpy()
            gl.glBindTexture(gl.GL_TEXTURE_2D, self.texture)
            gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 4)
            gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, w, h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, host)
            self.path = "host"
        self._last, self._last_host = rgba, host
        self.uploads += 1
        self.last_upload_ms = (time.perf_counter() - t0) * 1e3

    def last_frame(self) -> np.ndarray | None:
        """(H, W, 3) uint8 host copy of the frame shown last (made now on the interop path), or None."""
        if self._last is None:
            return None
        if self._last_host is None:
            self._last_host = self._last.cpu().numpy()
        return self._last_host[:, :, :3]

    def _release_interop(self) -> None:
        """Unregister the CUDA-GL resource; a failure there must not stop the host path or shutdown."""
        if self._interop is not None:
            try:
                self._interop.close()
            except Exception:  # noqa: BLE001
                pass
            self._interop = None

    def close(self) -> None:
        self._release_interop()
        gl.glDeleteTextures([self.texture])


def read_framebuffer(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 screenshot of the current framebuffer (top row first)."""
    gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
    data = gl.glReadPixels(0, 0, width, height, gl.GL_RGB, gl.GL_UNSIGNED_BYTE)
    arr = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    return np.ascontiguousarray(arr[::-1])
