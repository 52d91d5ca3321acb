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
    """Stands in for an RGBA uint8 CUDA tensor: records host copies and stream uses into ``log``."""

    def __init__(self, h=3, w=5, log=None, seed=0):
        self.shape, self.dtype, self.ndim, self.is_cuda = (h, w, 4), torch.uint8, 3, True
        self.device = torch.device("cuda", 0)
        self.pixels = torch.randint(0, 256, (h, w, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        self.host_copies = 0
        self.log = log if log is not None else []

    def is_contiguous(self):
        return True

    def data_ptr(self):
        return 1234

    def record_stream(self, stream):
        self.log.append(("record_stream", stream.cuda_stream))

    def cpu(self):
        self.host_copies += 1
        self.log.append(("host copy",))
        return self.pixels.clone()


class _FakeGL:
    """PyOpenGL's module as display.py uses it: every gl* call is logged; glGetTexImage returns
    ``readback`` (the texture's bytes)."""

    def __init__(self, log):
        self.log = log
        self.readback = None

    def glGenTextures(self, n):
        return 5

    def glGetTexImage(self, *args):
        self.log.append(("glGetTexImage",))
        return self.readback

    def __getattr__(self, name):
        if name.startswith("gl"):
            return lambda *a, **k: self.log.append((name,))
        return 0       # GL_* constants


class _FakeStream:
    def __init__(self, log, handle):
        self.log, self.cuda_stream, self.device = log, handle, torch.device("cuda", 0)

    def wait_event(self, ev):
        self.log.append(("wait_event", self.cuda_stream, ev))

    def wait_stream(self, other):
        self.log.append(("wait_stream", self.cuda_stream, other.cuda_stream))

    def synchronize(self):
        self.log.append(("synchronize", self.cuda_stream))


@pytest.fixture
def interop_env(runtime, monkeypatch):
    """Display with the real CudaGLInterop over the fake cuda-python runtime, a fake GL and fake CUDA
    streams, all logging into one list (runtime calls as their names)."""
    from pv3d_viewer import display as D

    calls = runtime()
    log = []
    gl = _FakeGL(log)
    monkeypatch.setattr(D, "gl", gl)
    created = []

    def new_stream(device=None):
        s = _FakeStream(log, 77)
        created.append(s)
        return s

    monkeypatch.setattr(torch.cuda, "Stream", new_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream(log, 0))
    monkeypatch.delenv("PV3D_DISPLAY", raising=False)
    # the runtime's calls also go to `log`, in order with the others
    rt = sys.modules["cuda.bindings.runtime"]
    for name in list(vars(rt)):
        fn = getattr(rt, name)
        if name.startswith("cuda") and callable(fn):
            def wrap(*a, _fn=fn, _name=name):
                log.append((_name,))
                return _fn(*a)
            setattr(rt, name, wrap)
    return types.SimpleNamespace(D=D, gl=gl, log=log, calls=calls, streams=created)


PER_FRAME = ["wait_event", "record_stream", "cudaGraphicsMapResources", "cudaGraphicsSubResourceGetMappedArray",
             "cudaMemcpy2DToArrayAsync", "cudaGraphicsUnmapResources"]


def test_interop_frames_touch_no_host_memory_and_are_checked_once(interop_env):
    """First frame: register, copy on the display stream after the render's event, read back through
    the texture once and compare with the frame. Every later frame: exactly wait / record_stream / map /
    array / copy / unmap on the display stream -- no host copy, no GL upload, no read-back."""
    env = interop_env
    disp = env.D.Display()
    first = _FakeCudaFrame(log=env.log)
    env.gl.readback = first.pixels.numpy().tobytes()         # what GL will read: the frame itself
    disp.upload(first, "ev-0")
    names = [e[0] for e in env.log]
    assert disp.path == "interop" and disp.describe() == "interop", disp.reason
    i = names.index("cudaGLGetDevices")
    assert names[i:] == ["cudaGLGetDevices", "cudaGraphicsGLRegisterImage", *PER_FRAME, "synchronize",
                         "host copy", "glBindTexture", "glPixelStorei", "glGetTexImage"]
    assert env.log[names.index("wait_event")] == ("wait_event", 77, "ev-0")      # the display stream waits
    memcpy = [c for c in env.calls if c[0] == "cudaMemcpy2DToArrayAsync"][0][1]
    assert memcpy == ("array", 0, 0, 1234, 20, 20, 3, "d2d", 77)                 # device to device, display stream
    assert "glTexSubImage2D" not in names and first.host_copies == 1
    assert len(env.streams) == 1

    for k in range(1, 11):
        env.log.clear()
        frame = _FakeCudaFrame(log=env.log, seed=k)
        disp.upload(frame, f"ev-{k}")
        assert [e[0] for e in env.log] == PER_FRAME, env.log
        assert env.log[0] == ("wait_event", 77, f"ev-{k}") and env.log[1] == ("record_stream", 77)
        assert frame.host_copies == 0
    assert disp.path == "interop" and disp.uploads == 11 and len(env.streams) == 1
    env.log.clear()
    assert disp.last_frame().shape == (3, 5, 3) and frame.host_copies == 1     # on request only, after its event
    assert [e[0] for e in env.log] == ["wait_event", "host copy"]
    disp.close()
    assert "cudaGraphicsUnregisterResource" in [e[0] for e in env.log]


def test_a_frame_that_reads_back_differently_sends_the_display_to_the_host_path(interop_env):
    env = interop_env
    disp = env.D.Display()
    frame = _FakeCudaFrame(log=env.log)
    wrong = frame.pixels.clone()
    wrong[0, 0, 0] ^= 9
    wrong[2, 4] = 255 - wrong[2, 4]
    env.gl.readback = wrong.numpy().tobytes()
    disp.upload(frame, "ev-0")
    assert disp.path == "host"
    assert "first-frame check" in disp.reason and "differs from the frame in 2 of 15 pixels" in disp.reason
    assert disp.describe().startswith("host (CUDA-GL interop failed its first-frame check")
    names = [e[0] for e in env.log]
    assert names.index("cudaGraphicsUnregisterResource") < names.index("glTexSubImage2D")   # shown anyway, by host
    env.log.clear()
    nxt = _FakeCudaFrame(log=env.log, seed=1)
    disp.upload(nxt, "ev-1")
    names = [e[0] for e in env.log]
    assert not any(n.startswith("cuda") for n in names) and "glTexSubImage2D" in names and nxt.host_copies == 1


@pytest.mark.parametrize("step", ["cudaGLGetDevices", "cudaGraphicsMapResources", "cudaMemcpy2DToArrayAsync"])
def test_a_failing_step_falls_back_to_the_host_path_and_says_which(runtime, monkeypatch, step):
    from pv3d_viewer import display as D

    calls = runtime(fail_at=step)
    log = []
    gl = _FakeGL(log)
    monkeypatch.setattr(D, "gl", gl)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _FakeStream(log, 77))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream(log, 0))
    monkeypatch.delenv("PV3D_DISPLAY", raising=False)
    disp = D.Display()
    frame = _FakeCudaFrame(log=log)
    disp.upload(frame, "ev")
    assert disp.path == "host" and f"unavailable: RuntimeError: {step} failed" in disp.reason
    assert "glTexSubImage2D" in [e[0] for e in log] and frame.host_copies == 1
    names = [c[0] for c in calls]
    if "cudaGraphicsMapResources" in names and step != "cudaGraphicsMapResources":
        assert names[-2:] == ["cudaGraphicsUnmapResources", "cudaGraphicsUnregisterResource"]
    n = len(calls)
    disp.upload(_FakeCudaFrame(log=log), "ev")
    assert len(calls) == n                                      # not tried again


def test_forced_host_path_makes_no_cuda_call(runtime, monkeypatch):
    from pv3d_viewer import display as D

    calls = runtime()
    log = []
    monkeypatch.setattr(D, "gl", _FakeGL(log))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream(log, 0))
    monkeypatch.setenv("PV3D_DISPLAY", "host")
    disp = D.Display()
    disp.upload(_FakeCudaFrame(log=log), "ev")
    assert calls == [] and disp.path == "host" and disp.describe() == "host (forced by PV3D_DISPLAY=host)"


def test_display_check_on_a_real_gl_context():
    """The program `pv3d doctor` runs: a hidden context (EGL without a display server), the host path
    read back through the texture as uploaded, and on a CPU-only machine the interop path skipped with
    the reason."""
    import json
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pv3d_viewer.display_check", "--json", "--size", "64", "--frames", "3",
                        "--context", "egl"], capture_output=True, text=True, timeout=120)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if r.returncode == 3:
        pytest.skip(f"no headless OpenGL context here: {out['context']['error']}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert out["context"]["kind"].startswith("EGL device") and out["context"]["version"]
    assert out["host"]["readback_matches"] is True and out["host"]["ms"] > 0
    if not torch.cuda.is_available():
        assert out["interop"]["status"] == "skipped" and "no CUDA device" in out["interop"]["reason"]
    else:
        assert out["interop"]["status"] in ("ok", "fallback") and out["interop"]["reason"]
