"""A test/automation hook: JSON commands over a Unix socket, executed on the UI thread.

Enabled only by ``--control-socket PATH`` (or ``$PV3D_VIEWER_CONTROL``). One JSON object per line in,
one JSON object per line out: ``{"cmd": "state"}`` -> ``{"ok": true, ...}``. The commands are the
app's (see ``ViewerApp.control_*``); they drive the same code paths as the widgets and callbacks.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading

from pv3d_core.errors import UsageError


class Pending:
    def __init__(self, msg: dict):
        self.msg = msg
        self.reply: dict | None = None
        self.event = threading.Event()

    def finish(self, reply: dict) -> None:
        self.reply = reply
        self.event.set()


class ControlServer:
    def __init__(self, path: str):
        self.path = path
        if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise UsageError(f"--control-socket {path}: exists and is not a socket; choose another path")
        # bound and listening under a temporary name, then renamed into place (over a stale socket left
        # by an earlier run): a client that sees the path can connect (bound at the path itself, a client
        # could meet it between bind and listen and be refused)
        tmp = f"{path}.{os.getpid()}.tmp"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(tmp)
            self.sock.listen(4)
            os.replace(tmp, path)
        except OSError as e:
            self.sock.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise UsageError(f"--control-socket {path}: cannot listen there ({e.strerror or e})") from None
        self.queue: "queue.Queue[Pending]" = queue.Queue()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="pv3d-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        try:
            for line in f:
                try:
                    msg = json.loads(line)
                except ValueError as e:
                    f.write((json.dumps({"ok": False, "error": f"bad JSON: {e}"}) + "\n").encode())
                    f.flush()
                    continue
                p = Pending(msg)
                self.queue.put(p)
                p.event.wait(300)
                f.write((json.dumps(p.reply or {"ok": False, "error": "timeout"}) + "\n").encode())
                f.flush()
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def drain(self) -> list[Pending]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        if os.path.exists(self.path):
            try:
                os.unlink(self.path)
            except OSError:
                pass


class ControlClient:
    """For tests and scripts: ``ControlClient(path).call("state")``."""

    def __init__(self, path: str, timeout: float = 120.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.f = self.sock.makefile("rwb")

    def call(self, cmd: str, **kw) -> dict:
        self.f.write((json.dumps({"cmd": cmd, **kw}) + "\n").encode())
        self.f.flush()
        line = self.f.readline()
        if not line:
            raise ConnectionError("viewer closed the control connection")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------ automation harness

class HarnessError(RuntimeError):
    """The X server or the viewer process did not come up."""


def start_xvfb(screen: str = "1280x800x24", timeout: float = 15.0):
    """A private Xvfb on a free display number: (process, ":N"). Raises :class:`HarnessError`
    when Xvfb is missing or does not start."""
    import shutil
    import subprocess
    import time

    if shutil.which("Xvfb") is None:
        raise HarnessError("Xvfb is not installed (apt-get install xvfb)")
    n = next((n for n in range(90, 200) if not os.path.exists(f"/tmp/.X{n}-lock")
              and not os.path.exists(f"/tmp/.X11-unix/X{n}")), None)
    if n is None:
        raise HarnessError("no free X display number")
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", screen, "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + timeout
    while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
        if proc.poll() is not None or time.time() > end:
            proc.kill()
            raise HarnessError(f"Xvfb :{n} did not start")
        time.sleep(0.05)
    return proc, f":{n}"


def launch_viewer(sock: str, args=(), env=None, cwd=None, log=None, timeout: float = 90.0):
    """Start ``python -m pv3d_viewer.app --control-socket sock *args`` and wait for its socket:
    (process, :class:`ControlClient`). ``log``: an open binary file for its output (default: discarded)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pv3d_viewer.app", "--control-socket", sock, *args], env=env,
                            cwd=cwd, stdout=log if log is not None else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    end = time.time() + timeout
    while not os.path.exists(sock):
        if proc.poll() is not None:
            raise HarnessError(f"viewer exited with {proc.returncode}")
        if time.time() > end:
            proc.kill()
            raise HarnessError(f"viewer did not open its control socket in {timeout:.0f} s")
        time.sleep(0.1)
    while True:     # the socket is listening once it has its name; refused: the viewer has gone since
        try:
            return proc, ControlClient(sock)
        except ConnectionRefusedError:
            if proc.poll() is not None:
                raise HarnessError(f"viewer exited with {proc.returncode}") from None
            if time.time() > end:
                proc.kill()
                raise HarnessError(f"viewer refused connections to its control socket for {timeout:.0f} s") from None
            time.sleep(0.1)
