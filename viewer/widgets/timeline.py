"""The timeline: play, loop, the real-time clock or every frame, position, speed, long clips."""
from __future__ import annotations

from imgui_bundle import imgui

from .. import state as S
from .base import action_button, combo, explain, remember


def draw(app, st, actions: list, panel) -> None:
    ui = app.ui
    imgui.separator_text("Timeline")
    action_button(ui, actions, "Pause (space)" if st.playing else "Play (space)", "toggle_play", "play")
    imgui.same_line()
    imgui.push_item_width(95)
    ch, v = combo("Loop", st.loop, S.LOOP_MODES)
    if ch:
        st.loop = v
    imgui.same_line()
    ch, v = combo("##playback", st.playback_mode, S.PLAYBACK_MODES)
    if ch:
        st.playback_mode = v
        app.settings.playback_mode = v
    remember(ui, "playback_mode")
    explain(ui, "realtime: the clock runs at the chosen speed (25 frames a second) and frames that are not "
                "rendered in time are skipped.  every frame: waits for each frame (slow motion when "
                "rendering cannot keep up).")
    imgui.pop_item_width()
    length = S.timeline_length(st)
    label = "Position" if st.long_clip else "Time t"
    ch, v = imgui.slider_float(label, S.timeline_pos(st), 0.0, length, "%.3f")
    if ch:
        S.set_timeline_pos(st, v)
    if imgui.is_item_active():
        panel.interacting = True
    remember(ui, "time")
    ch, v = imgui.slider_float("Speed", st.speed, 0.1, 4.0, "%.2fx")
    if ch:
        st.speed = v
    ch, v = imgui.checkbox("Long clip", st.long_clip)
    if ch:
        st.long_clip = v
        st.phase = 0.0 if v else st.phase
        st.t = 0.0 if not v else st.t
    explain(ui, "Chain motion seeds (motion seed, +1, +2, ...) through t = 0 into one long clip.")
    if st.long_clip:
        imgui.same_line()
        imgui.push_item_width(110)
        ch, v = imgui.slider_int("Segments", st.long_clip_segments, 2, 16)
        imgui.pop_item_width()
        if ch:
            st.long_clip_segments = v
            st.phase = min(st.phase, float(v))
        ms, t = S.long_clip_position(st.phase, st.long_clip_segments, st.motion_seed)
        imgui.same_line()
        imgui.text_disabled(f"seed {ms}, t {t:.2f}")
