"""The CUDA-GL interop calls, checked against a fake cuda-python runtime (no GPU here), and the RGBA
conversion of the host path. The real interop path runs only where a CUDA GPU drives the GL context."""
import sys
import types

import pytest
import torch

pytest.importorskip("OpenGL.GL")

from pv3d_viewer.display import CudaGLInterop, to_rgba  # noqa: E402


def fake_runtime(fail_at=None):
    calls = []
    ok = "success"

    def step(name, *ret):
        def fn(*args):
            calls.append((name, args))
            err = "failure" if name == fail_at else ok
            return (err, *ret)
        return fn

    rt = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=ok),
        cudaGLDeviceList=types.SimpleNamespace(cudaGLDeviceListAll="all"),
        cudaGraphicsRegisterFlags=types.SimpleNamespace(cudaGraphicsRegisterFlagsWriteDiscard="write-discard"),
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyDeviceToDevice="d2d"),
        cudaGLGetDevices=step("cudaGLGetDevices", 1, [0]),
        cudaGraphicsGLRegisterImage=step("cudaGraphicsGLRegisterImage", "resource"),
        cudaGraphicsMapResources=step("cudaGraphicsMapResources"),
        cudaGraphicsSubResourceGetMappedArray=step("cudaGraphicsSubResourceGetMappedArray", "array"),
        cudaMemcpy2DToArrayAsync=step("cudaMemcpy2DToArrayAsync"),
        cudaGraphicsUnmapResources=step("cudaGraphicsUnmapResources"),
        cudaGraphicsUnregisterResource=step("cudaGraphicsUnregisterResource"),
    )
    return rt, calls


@pytest.fixture
def runtime(monkeypatch):
    def install(fail_at=None):
        rt, calls = fake_runtime(fail_at)
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = rt
        monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
        return calls
    return install


def test_interop_registers_once_then_maps_copies_and_unmaps(runtime):
    import OpenGL.GL as gl

    calls = runtime()
    interop = CudaGLInterop(texture=7)
    assert [c[0] for c in calls] == ["cudaGLGetDevices", "cudaGraphicsGLRegisterImage"]
    assert calls[1][1] == (7, gl.GL_TEXTURE_2D, "write-discard")
    rgba = torch.zeros(3, 5, 4, dtype=torch.uint8)
    interop.copy(rgba, stream=42)
    names = [c[0] for c in calls[2:]]
    assert names == ["cudaGraphicsMapResources", "cudaGraphicsSubResourceGetMappedArray",
                     "cudaMemcpy2DToArrayAsync", "cudaGraphicsUnmapResources"]
    memcpy = calls[4][1]
    assert memcpy == ("array", 0, 0, rgba.data_ptr(), 5 * 4, 5 * 4, 3, "d2d", 42)   # pitch = width * 4 bytes
    interop.close()
    assert calls[-1][0] == "cudaGraphicsUnregisterResource"


@pytest.mark.parametrize("step", ["cudaGLGetDevices", "cudaGraphicsGLRegisterImage"])
def test_a_failing_setup_step_raises(runtime, step):
    runtime(fail_at=step)
    with pytest.raises(RuntimeError, match=step):
        CudaGLInterop(texture=1)


def test_a_failing_copy_still_unmaps(runtime):
    calls = runtime(fail_at="cudaMemcpy2DToArrayAsync")
    interop = CudaGLInterop(texture=1)
    with pytest.raises(RuntimeError, match="cudaMemcpy2DToArrayAsync"):
        interop.copy(torch.zeros(2, 2, 4, dtype=torch.uint8), stream=0)
    assert calls[-1][0] == "cudaGraphicsUnmapResources"


def test_to_rgba():
    img = torch.randint(0, 255, (4, 6, 3), dtype=torch.uint8)
    out = to_rgba(img)
    assert out.shape == (4, 6, 4) and out.is_contiguous()
    assert torch.equal(out[..., :3], img) and bool((out[..., 3] == 255).all())
    with pytest.raises(ValueError, match="uint8"):
        to_rgba(img.float())


class _FakeCudaFrame:
    """Stands in for an RGBA uint8 CUDA tensor: records host copies."""

    def __init__(self, h=3, w=5):
        self.shape, self.dtype, self.ndim, self.is_cuda, self.device = (h, w, 4), torch.uint8, 3, True, "cuda:0"
        self.host_copies = 0

    def is_contiguous(self):
        return True

    def contiguous(self):
        return self

    def data_ptr(self):
        return 1234

    def cpu(self):
        self.host_copies += 1
        return torch.zeros(self.shape, dtype=torch.uint8)


def test_interop_upload_waits_for_the_render_on_the_device_and_keeps_no_host_copy(monkeypatch):
    """Display.upload on the interop path used to copy every frame to the host (a sync per frame) and
    convert it to RGBA on the UI thread's stream; the frame now comes as RGBA made on the render's
    stream with an event, the copy's stream waits for that event, and a host copy is made only when
    asked for."""
    from pv3d_viewer import display as D

    events = []

    class FakeGL(types.SimpleNamespace):
        def __getattr__(self, name):
            return (lambda *a, **k: events.append(name)) if name.startswith("gl") else 0

    gl = FakeGL(glGenTextures=lambda n: 5)
    monkeypatch.setattr(D, "gl", gl)

    class FakeInterop:
        def __init__(self, texture):
            events.append(("register", texture))

        def copy(self, rgba, stream):
            events.append(("copy", stream))

    class FakeStream:
        cuda_stream = 77

        def wait_event(self, ev):
            events.append(("wait", ev))

    monkeypatch.setattr(D, "CudaGLInterop", FakeInterop)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.delenv("PV3D_DISPLAY", raising=False)
    disp = D.Display()
    frame = _FakeCudaFrame()
    disp.upload(frame, "render-done")
    assert disp.path == "interop" and frame.host_copies == 0
    steps = [e for e in events if isinstance(e, tuple)]
    assert steps == [("register", 5), ("wait", "render-done"), ("copy", 77)]
    assert "glTexSubImage2D" not in events
    assert disp.last_frame().shape == (3, 5, 3) and frame.host_copies == 1    # on request only
