"""The frame texture: one class, two upload paths.

- **CUDA-GL interop** (a CUDA frame): the GL texture is registered once with CUDA
  (``cudaGraphicsGLRegisterImage``, write-discard); each frame maps it, copies the torch tensor's RGBA
  bytes into the mapped array (``cudaMemcpy2DToArrayAsync`` on torch's current stream) and unmaps. No
  host round trip. Chosen only when cuda-python is installed, the GL context is on a CUDA device and
  every step succeeds; ``PV3D_DISPLAY=host`` forces the host path.
- **Host** (CPU frames, or interop unavailable): ``glTexSubImage2D`` of RGBA8 into a texture allocated
  once per size.
"""
from __future__ import annotations

import os

import numpy as np
import OpenGL.GL as gl

from .worker import to_rgba


class Display:
    def __init__(self):
        self.tex = None
        self.size = (0, 0)
        self.path = "host"
        self._cuda = None            # interop state when live
        self._interop_failed = None  # why interop is off (shown in the status bar)

    def _alloc(self, w: int, h: int) -> None:
        if self.tex is None:
            self.tex = int(gl.glGenTextures(1))
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.tex)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)
        gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA8, w, h, 0, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, None)
        self.size = (w, h)
        self._unregister()

    def upload(self, image) -> None:
        """Show a (H, W, 3) uint8 frame (torch tensor on any device, or numpy)."""
        h, w = int(image.shape[0]), int(image.shape[1])
        if (w, h) != self.size:
            self._alloc(w, h)
        if getattr(image, "is_cuda", False) and os.environ.get("PV3D_DISPLAY", "") != "host":
            if self._upload_interop(image):
                self.path = "cuda-gl interop"
                return
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.tex)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 4)
        gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, w, h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, to_rgba(image))
        self.path = "host"

    # ------------------------------------------------------------------ interop
    def _upload_interop(self, image) -> bool:
        if self._interop_failed:
            return False
        try:
            import torch
            from cuda.bindings import runtime as rt

            if self._cuda is None:
                err, res = rt.cudaGraphicsGLRegisterImage(self.tex, gl.GL_TEXTURE_2D,
                                                          rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard)
                _check(err, "cudaGraphicsGLRegisterImage")
                self._cuda = res
            rgba = torch.empty(image.shape[0], image.shape[1], 4, dtype=torch.uint8, device=image.device)
            rgba[..., :3] = image
            rgba[..., 3] = 255
            stream = torch.cuda.current_stream(image.device).cuda_stream
            (err,) = rt.cudaGraphicsMapResources(1, self._cuda, stream)
            _check(err, "cudaGraphicsMapResources")
            try:
                err, arr = rt.cudaGraphicsSubResourceGetMappedArray(self._cuda, 0, 0)
                _check(err, "cudaGraphicsSubResourceGetMappedArray")
                w4 = image.shape[1] * 4
                (err,) = rt.cudaMemcpy2DToArrayAsync(arr, 0, 0, rgba.data_ptr(), w4, w4, image.shape[0],
                                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)
                _check(err, "cudaMemcpy2DToArrayAsync")
            finally:
                (err,) = rt.cudaGraphicsUnmapResources(1, self._cuda, stream)
            _check(err, "cudaGraphicsUnmapResources")
            return True
        except Exception as e:  # no cuda-python, GL not on a CUDA device (e.g. llvmpipe), ...
            self._interop_failed = f"{type(e).__name__}: {e}"
            self._unregister()
            return False

    def _unregister(self) -> None:
        if self._cuda is not None:
            try:
                from cuda.bindings import runtime as rt

                rt.cudaGraphicsUnregisterResource(self._cuda)
            except Exception:
                pass
            self._cuda = None

    @property
    def interop_note(self) -> str | None:
        return self._interop_failed

    def read_back(self) -> np.ndarray:
        """The texture's pixels (H, W, 3) uint8 (tests)."""
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.tex)
        data = gl.glGetTexImage(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE)
        return np.frombuffer(data, np.uint8).reshape(self.size[1], self.size[0], 4)[..., :3].copy()

    def destroy(self) -> None:
        self._unregister()
        if self.tex is not None:
            gl.glDeleteTextures([self.tex])
            self.tex = None


def _check(err, what: str) -> None:
    code = getattr(err, "value", err)
    if code != 0:
        raise RuntimeError(f"{what} failed ({err})")
