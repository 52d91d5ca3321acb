"""The viewer's window-free logic added for issues 14 and 18: the playback clock, one progress bar over a
job's stages, recent files, background jobs' priority, names of exports."""
import json
import os
import sys
import threading

import pytest

from pv3d_core.pipeline import RenderSettings
from pv3d_viewer import jobs as J
from pv3d_viewer.cpu_share import JOB_NICE, JOB_THREADS, USER_ACTIVE, env_number, use_threads
from pv3d_viewer import state as S
from pv3d_viewer.playback import Playback
from pv3d_viewer.progress import StagedProgress
from pv3d_viewer.recent import KEEP, RecentFiles


# ------------------------------------------------------------------------------------ playback

class SlowCache:
    """A worker stand-in: one render at a time, ``delay`` seconds of simulated time each; a direct request
    goes before the render-ahead list (as in RenderWorker), and its result is shown when it is ready."""

    def __init__(self, delay):
        self.delay, self.now, self.ready = delay, 0.0, {}
        self.busy_until = 0.0
        self.requested = {}              # direct requests being rendered -> when they are ready

    def ask(self, request, prefetch):
        if self.now < self.busy_until:
            return
        todo = [(request, True)] if request is not None else []
        todo += [(s, False) for s in prefetch if s not in self.ready][:1]
        for s, direct in todo[:1]:
            self.busy_until = self.now + self.delay
            self.ready[s] = self.busy_until
            if direct:
                self.requested[s] = self.busy_until

    def cached(self, s):
        return "frame" if self.ready.get(s, 1e9) <= self.now else None

    def results(self):
        done = [s for s, t in self.requested.items() if t <= self.now]
        for s in done:
            del self.requested[s]
        return done


def play(mode, delay, seconds=4.0, dt=1 / 60, moving_camera=False):
    st = S.ViewerState(playing=True, playback_mode=mode, t=0.0)
    pb, cache, shown = Playback(), SlowCache(delay), None
    steps = int(seconds / dt)
    for i in range(steps):
        cache.now += dt
        if moving_camera:              # e.g. a camera path preview: nothing rendered ahead is ever used
            st.yaw = 10 * i * dt
        for s in cache.results():      # the result of a direct request, shown late (the app's ResultGate)
            shown = s
            if mode == "realtime":
                pb.note_shown()
        step = pb.step(st, dt, cache.cached, delay, shown)
        if step.show:
            shown = step.show[1]
        cache.ask(step.request, step.prefetch)
    return pb, seconds


def test_realtime_playback_keeps_the_clock_and_drops_late_frames():
    pb, secs = play("realtime", delay=0.15)
    assert pb.distance / secs == pytest.approx(0.5, rel=0.02)          # 1 clip per 2 s, whatever the render time
    assert pb.dropped > 0 and pb.shown > 10
    assert pb.shown / secs > 0.5 / 0.15, "fewer than half the frames it could render were shown"
    fast, secs = play("realtime", delay=0.01)
    assert fast.distance / secs == pytest.approx(0.5, rel=0.02) and fast.shown > pb.shown
    # the camera moves while it plays: frames are asked for directly and shown late, never none
    moving, secs = play("realtime", delay=0.15, moving_camera=True)
    assert moving.distance / secs == pytest.approx(0.5, rel=0.02) and moving.shown / secs > 1.5


def test_every_frame_playback_waits_for_each_frame():
    pb, secs = play("every frame", delay=0.15)
    assert pb.dropped == 0 and pb.distance / secs < 0.2                 # slow motion, but every frame
    fast, secs = play("every frame", delay=0.001)
    assert fast.distance / secs > 0.4


# ------------------------------------------------------------------------------------ progress

def test_one_bar_over_stages_never_goes_back_and_says_the_time_left():
    clock = [0.0]
    bar = StagedProgress([("align", 1), ("w", 4), ("pti", 6)], clock=lambda: clock[0])
    seen = []
    for stage, n in (("align", 1), ("w", 4), ("pti", 6)):
        for i in range(1, n + 1):
            clock[0] += 1.0
            seen.append(bar.update(stage, i, n))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert fractions[1] == pytest.approx(2 / 11)        # the first w step: align + 1 of 11 steps
    status = seen[7][1]                                  # pti 3/6: 3 steps left at 1 s each
    assert status.startswith("PTI") and "3/6" in status and "3 s left" in status
    assert bar.update("w", 1, 4)[0] == 1.0              # a late report of an earlier stage does not pull it back
    # weighted steps: with each PTI step taking 3.5 latent steps' time, the time left holds across stages
    clock[0] = 0.0
    bar = StagedProgress([("w", 10), ("pti", 10, 3.5)], clock=lambda: clock[0])
    for i in range(1, 11):
        clock[0] += 1.0
        bar.update("w", i, 10)
    clock[0] += 3.5
    f, status = bar.update("pti", 1, 10)
    assert f == pytest.approx(13.5 / 45) and "32 s left" in status       # 9 PTI steps of 3.5 s: 31.5 s


# ------------------------------------------------------------------------------------ recent files

def test_recent_files_newest_first_bounded_and_forgiving(tmp_path):
    p = tmp_path / "recent.json"
    r = RecentFiles(p).load()
    assert r.items == []
    for i in range(KEEP + 3):
        r.add(tmp_path / f"m{i}.safetensors", "model")
    r.add(tmp_path / "face.png", "photo")
    r.add(tmp_path / "m2.safetensors", "model")          # reopened: moves to the front, no duplicate
    back = RecentFiles(p).load()
    models = [it["path"] for it in back.of("model")]
    assert len(models) == KEEP and models[0].endswith("m2.safetensors") and len(set(models)) == KEEP
    assert back.of("photo")[0]["path"].endswith("face.png")
    for junk in ("{", "[1, 2]", json.dumps([{"path": 3, "kind": "model"}, {"path": "/x", "kind": "virus"}])):
        p.write_text(junk)
        assert RecentFiles(p).load().items == []
    p.write_text("[" * 100000 + "]" * 100000)
    assert RecentFiles(p).load().items == []


# ------------------------------------------------------------------------------------ jobs

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is a Linux feature")
def test_background_jobs_run_at_a_lower_priority_than_the_ui():
    ui_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    job = J.Job("x", lambda job: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).start()
    job.join(10)
    assert job.result == min(19, ui_nice + JOB_NICE) and job.nice == job.result
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ui_nice     # the caller is untouched


@pytest.mark.skipif(JOB_THREADS < 2, reason="one core: a job and the UI compute with one thread each")
def test_a_job_computes_with_every_core_and_leaves_the_callers_thread_count_alone():
    # the UI (here a thread standing for it) computes with one thread; the job it starts with all of
    # them, without changing the UI's count
    import torch

    out = {}

    def ui():
        out["ui_before"] = use_threads(1)
        job = J.Job("x", lambda job: torch.get_num_threads()).start()
        job.join(10)
        out["job"], out["job_attr"] = job.result, job.threads
        out["ui_after"] = torch.get_num_threads()

    th = threading.Thread(target=ui)
    th.start()
    th.join(20)
    assert out == {"ui_before": 1, "job": JOB_THREADS, "job_attr": JOB_THREADS, "ui_after": 1}


@pytest.mark.skipif(JOB_THREADS < 2, reason="one core: a job computes with one thread anyway")
def test_a_job_gives_its_cores_back_while_the_user_interacts():
    import torch

    seen = []

    def body(job):
        for active in (True, False, True):
            (USER_ACTIVE.set if active else USER_ACTIVE.clear)()
            job.report(1, 3)                # between two steps
            seen.append((torch.get_num_threads(), job.threads))
        return None

    try:
        J.Job("x", body).start().join(10)
    finally:
        USER_ACTIVE.clear()
    assert seen == [(1, 1), (JOB_THREADS, JOB_THREADS), (1, 1)]


def test_a_bad_override_in_the_environment_gives_the_default_and_one_warning(monkeypatch, caplog):
    monkeypatch.setenv("PV3D_TEST_KNOB", "2.5")
    assert env_number("PV3D_TEST_KNOB", 1.0, 0.05, 10) == 2.5
    for bad in ("abc", "-1", "nan", "1e9"):
        monkeypatch.setenv("PV3D_TEST_KNOB", bad)
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert env_number("PV3D_TEST_KNOB", 1.0, 0.05, 10) == 1.0
        assert len(caplog.records) == 1 and "PV3D_TEST_KNOB" in caplog.records[0].getMessage()
    monkeypatch.delenv("PV3D_TEST_KNOB")
    assert env_number("PV3D_TEST_KNOB", 1.0, 0.05, 10) == 1.0


def test_exports_of_a_portrait_are_named_after_it(tmp_path):
    s = RenderSettings(seed=4, motion_seed=5)
    a = J.output_name(tmp_path, s, "mp4", portrait="my photo (1)")
    assert a.name.startswith("pv3d_portrait-my-photo--1_motion5_") and a.suffix == ".mp4"
    b = J.output_name(tmp_path, s.with_(seed_b=9, blend=0.25), "png")
    assert b.name.startswith("pv3d_seed4-to9-25pct_motion5_")
    folder = J.output_name(tmp_path, s, "", "_meshes")
    folder.mkdir()
    assert J.output_name(tmp_path, s, "", "_meshes").name == folder.name + "-1"


# ------------------------------------------------------------------------------------ remembered settings

def test_remembered_layout_and_choices_fall_back_when_the_file_holds_nonsense(tmp_path, monkeypatch):
    """The settings store checks types (viewer/settings_store.py); the values a widget offers are checked
    where they are used, so a hand-edited or stale file cannot select a tab, format or mode that is not
    there."""
    monkeypatch.setenv("PV3D_VIEWER_CONFIG", str(tmp_path))
    (tmp_path / "viewer.json").write_text(json.dumps({
        "panel_tab": "Nope", "playback_mode": "backwards", "mesh_format": "stl", "mesh_resolution": 100000,
        "mesh_level": -4, "show_performance": "yes", "walk_frames": 0}))
    from pv3d_viewer.app import parse_args
    from pv3d_viewer.exports import Exports
    from pv3d_viewer.window import ViewerApp

    app = ViewerApp(parse_args([]))
    assert app.ui.requested_tab == "Scene" and app.st.playback_mode == "realtime" and not app.ui.perf_open
    assert Exports(app).mesh_settings() == (128, 10.0, "glb")
    assert app.settings.walk_frames == 48
    (tmp_path / "viewer.json").write_text(json.dumps({"panel_tab": "Path", "playback_mode": "every frame",
                                                      "mesh_format": "obj", "show_performance": True}))
    app = ViewerApp(parse_args([]))
    assert app.ui.requested_tab == "Path" and app.st.playback_mode == "every frame" and app.ui.perf_open
    assert Exports(app).mesh_settings() == (128, 10.0, "obj")


def test_a_new_epochs_frame_at_the_same_view_is_shown():
    """A running fit's live state arrives as a new epoch with its frame already cached at the view on
    screen (viewer.live_preview). The UI must upload it although the settings did not change: the same
    settings of another epoch are another picture (before, the first live state stayed on screen for
    the whole fit)."""
    import time

    from pv3d_viewer.window import ViewerApp
    from pv3d_viewer.worker import ResultGate

    class Worker:
        has_model, epoch, generation, render_s = True, 1, 0, 0.01

        def __init__(self):
            self.frames, self.requests = {}, []

        def cached(self, s):
            return self.frames.get((self.epoch, s))

        def request(self, s):
            self.requests.append(s)

        def prefetch(self, settings):
            pass

        def frame_info(self, s):
            return {}

    uploads = []
    app = ViewerApp.__new__(ViewerApp)
    app.worker, app.st, app.gate, app.playback = Worker(), S.ViewerState(), ResultGate(), Playback()
    app.display = type("D", (), {"upload": lambda self, image, ready: uploads.append(image)})()
    app.path_editor = type("P", (), {"step": lambda self, st, dt: None, "previewing": False})()
    app.panels = type("Q", (), {"interacting": False})()
    app.last_input, app._prefetching, app.buffering = time.perf_counter() - 60, False, False
    app.last_requested = app.shown_settings = app.last_result_settings = None
    app.shown_epoch, app.frames_shown, app.render_times, app.timings = -1, 0, [], {}
    view = S.render_settings(app.st)
    app.worker.frames[(1, view)] = ("live state 1", None)
    app.schedule(0.01)
    assert uploads == ["live state 1"] and app.worker.requests == []
    app.worker.epoch = 2                                   # the next live state, at the same view
    app.worker.frames[(2, view)] = ("live state 2", None)
    app.last_requested = None                              # what the worker's command result does
    app.schedule(0.01)
    assert uploads == ["live state 1", "live state 2"] and app.worker.requests == []
    app.last_requested = None
    app.schedule(0.01)                                     # nothing new: no second upload
    assert len(uploads) == 2 and app.shown_now() == view


def test_a_jobs_progress_alone_redraws_at_most_twice_a_second():
    """A fit's progress label changes with every step (3-4 a second here), and under llvmpipe each
    frame costs ~25 ms of both cores that the fit needs: progress alone redraws every
    PROGRESS_REDRAW_S, while a job's end (or any other visible change) draws at once."""
    from types import SimpleNamespace as NS

    from pv3d_viewer.window import PROGRESS_REDRAW_S, ViewerApp

    job = NS(id=1, status="PTI 1/180", progress=0.10, done=False, error=None)
    app = ViewerApp.__new__(ViewerApp)
    app.results_seen = app.frames_shown = 0
    app.display, app.worker = NS(uploads=0), NS(epoch=0, model_name="m")
    app.message = app.notice = app.viewport_error = app.last_requested = None
    app.dialogs, app.portrait_active, app.jobs = NS(pending=[]), False, NS(jobs=[job])
    app.last_event, app.imgui = -1e9, NS(get_io=lambda: NS(want_text_input=False))
    app._drawn_state, app._drawn_progress = app.visible_state(), app.job_progress()
    now = 100.0
    assert not app.needs_redraw(now, now - 0.1)                    # nothing changed
    job.status, job.progress = "PTI 2/180", 0.11
    assert not app.needs_redraw(now, now - 0.1)                    # progress only, drawn 0.1 s ago
    assert app.needs_redraw(now, now - PROGRESS_REDRAW_S)          # ... and once the interval is over
    job.done = True
    assert app.needs_redraw(now, now - 0.1)                        # the job's end: at once


# ------------------------------------------------------------------------------------ control socket

def test_the_control_socket_accepts_as_soon_as_its_path_exists(tmp_path, monkeypatch):
    """viewer.control: the socket's path appears only once it listens. A client polling for the path (as
    launch_viewer does) met it between bind and listen and was refused; listen is slowed here to widen
    that window."""
    import socket
    import time

    from pv3d_viewer.control import ControlClient, ControlServer

    listen = socket.socket.listen

    def slow_listen(self, *a):
        time.sleep(0.3)
        return listen(self, *a)

    monkeypatch.setattr(socket.socket, "listen", slow_listen)
    path = str(tmp_path / "ctl.sock")
    got = {}

    def client():
        end = time.time() + 10
        while not os.path.exists(path) and time.time() < end:
            time.sleep(0.001)
        try:
            got["client"] = ControlClient(path, timeout=5)
        except OSError as e:
            got["error"] = e

    t = threading.Thread(target=client)
    t.start()
    server = ControlServer(path)
    t.join(15)
    try:
        assert "error" not in got, got
        assert "client" in got
        assert sorted(os.listdir(tmp_path)) == ["ctl.sock"]          # no temporary name left behind
    finally:
        if "client" in got:
            got["client"].close()
        server.close()
    assert not os.path.exists(path)


def test_a_bad_control_socket_path_is_a_usage_error_and_changes_nothing(tmp_path):
    """viewer.control: a path in a missing folder, or one that is a file, is the user's error (one line,
    exit 2 in the viewer) and the file is left as it was; a stale socket from an earlier run is replaced."""
    import socket

    from pv3d_core.errors import UsageError
    from pv3d_viewer.control import ControlClient, ControlServer

    with pytest.raises(UsageError, match="cannot listen there"):
        ControlServer(str(tmp_path / "missing" / "ctl.sock"))
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(UsageError, match="not a socket"):
        ControlServer(str(precious))
    assert precious.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]            # no temporary socket left behind
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "ctl.sock"))
    stale.close()                                                    # its file stays, nobody listening
    server = ControlServer(str(tmp_path / "ctl.sock"))
    try:
        ControlClient(str(tmp_path / "ctl.sock"), timeout=5).close()
    finally:
        server.close()
