"""The real viewer under Xvfb + Mesa, for the GUI tests: a private X server, the app as a subprocess driven
through its control socket (viewer/control_commands.py), xdotool for the mouse and keyboard, glReadPixels
screenshots (saved in tests/artifacts/viewer_*.png), and an XDND drag source for real OS drops."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
HOOKS = ROOT / "tests" / "gui_hooks"


# ------------------------------------------------------------------------------------ harness

def xvfb_display():
    """A generator for a module-scoped fixture: a private Xvfb's display name, stopped afterwards."""
    from pv3d_viewer.control import HarnessError, start_xvfb

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb; .ci/run installs it)")
    try:
        proc, display = start_xvfb()
    except HarnessError as e:
        pytest.skip(str(e))
    yield display
    proc.terminate()
    proc.wait(10)


class App:
    def __init__(self, display, tmp: Path, args=(), env=None, hooks: bool = False):
        """``hooks``: put tests/gui_hooks first on the app's path (its sitecustomize shortens portrait
        fits to $PV3D_TEST_FIT_STEPS)."""
        from pv3d_viewer.control import HarnessError, launch_viewer

        self.display = display
        self.tmp = tmp
        self.sock = str(tmp / "ctl.sock")
        path = [str(HOOKS)] if hooks else []
        path += [str(ROOT), os.environ.get("PYTHONPATH", "")]
        self.env = dict(os.environ, DISPLAY=display, PV3D_VIEWER_CONFIG=str(tmp / "cfg"),
                        PYTHONPATH=os.pathsep.join(path), **(env or {}))
        self.log = open(tmp / "viewer.log", "wb")
        self.logpath = tmp / "viewer.log"
        try:
            self.proc, self.c = launch_viewer(self.sock, args, self.env, str(ROOT), self.log)
        except HarnessError as e:
            raise AssertionError(f"{e}:\n{self.logpath.read_text()}") from None

    def call(self, cmd, **kw):
        r = self.c.call(cmd, **kw)
        assert r.get("ok"), r
        return r

    def state(self):
        return self.call("state")

    def settle(self, timeout=90):
        end = time.time() + timeout
        while time.time() < end:
            s = self.state()
            if s["settled"]:
                return s
            time.sleep(0.05)
        raise AssertionError(f"viewer did not settle: {s}")

    def wait_for(self, pred, timeout=30, what="condition"):
        end = time.time() + timeout
        while time.time() < end:
            s = self.state()
            if pred(s):
                return s
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {s['state']}")

    def set(self, **fields):
        self.call("set", **fields)
        return self.settle()

    def shot(self, name):
        r = self.call("screenshot", path=str(ARTIFACTS / f"viewer_{name}.png"))
        from PIL import Image
        img = np.asarray(Image.open(r["path"]))
        x, y, w, h = r["viewport"]
        return img, img[y:y + h, x:x + w]

    def xdo(self, *args):
        return subprocess.run(["xdotool", *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def window_id(self):
        return self.xdo("search", "--name", "PV3D Studio").split()[0]

    def quit(self):
        try:
            self.c.call("quit")
        except (ConnectionError, OSError):
            pass
        rc = self.proc.wait(60)
        self.log.close()
        return rc


def job_by_id(app, job_id):
    return next(j for j in app.call("jobs")["jobs"] if j["id"] == job_id)


def diff(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


# ------------------------------------------------------------------------------------ a real OS drop

def xdnd_drop(display_name: str, target_id: int, path, x: int, y: int, timeout: float = 20.0) -> None:
    """Drag ``path`` onto window ``target_id`` at window position (x, y) with the XDND protocol, as a
    file manager would: Enter, Position, (Status), Drop, serve the selection, (Finished)."""
    from pathlib import Path as _P

    from Xlib import X, display
    from Xlib.protocol import event

    d = display.Display(display_name)
    atom = lambda name: d.intern_atom(name)
    root = d.screen().root
    src = root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
    target = d.create_resource_object("window", target_id)
    uri_list = atom("text/uri-list")
    payload = (_P(path).resolve().as_uri() + "\r\n").encode()
    src.set_selection_owner(atom("XdndSelection"), X.CurrentTime)
    origin = target.translate_coords(root, 0, 0)        # root origin in window coordinates
    rx, ry = x - origin.x, y - origin.y

    def send(name, data):
        ev = event.ClientMessage(window=target, client_type=atom(name), data=(32, data))
        target.send_event(ev, event_mask=0)
        d.flush()

    def wait_for(pred):
        end = time.time() + timeout
        while time.time() < end:
            while d.pending_events():
                ev = d.next_event()
                if ev.type == X.SelectionRequest:
                    req = ev.requestor
                    req.change_property(ev.property, ev.target, 8, payload)
                    note = event.SelectionNotify(time=ev.time, requestor=req, selection=ev.selection,
                                                 target=ev.target, property=ev.property)
                    req.send_event(note)
                    d.flush()
                elif pred(ev):
                    return ev
            time.sleep(0.01)
        raise AssertionError("the XDND drop timed out")

    is_msg = lambda name: (lambda ev: ev.type == X.ClientMessage and ev.client_type == atom(name))
    send("XdndEnter", [src.id, 5 << 24, uri_list, 0, 0])
    send("XdndPosition", [src.id, 0, (rx << 16) | ry, X.CurrentTime, atom("XdndActionCopy")])
    status = wait_for(is_msg("XdndStatus"))
    assert status.data[1][1] & 1, "the window did not accept the drop"
    send("XdndDrop", [src.id, 0, X.CurrentTime, 0, 0])
    wait_for(is_msg("XdndFinished"))
    src.destroy()
    d.close()


