"""Who and how they move: the appearance seed, the motion seed and truncation (psi)."""
from __future__ import annotations

from imgui_bundle import imgui

from .. import state as S
from .base import disabled_if, explain, remember

PORTRAIT_FIXES = "A fitted portrait sets the appearance: use Back to seeds (Model) to choose seeds again."
T0_NOTE = ("The motion seed drives how the face moves over time. At t = 0 every motion seed gives the same "
           "frame (the model scales the motion by t), so it changes nothing there: move the timeline.")


def draw(app, st, actions: list) -> None:
    ui = app.ui
    imgui.separator_text("Identity and motion")
    imgui.push_item_width(140)
    with disabled_if(ui, app.portrait_active, "seed"):
        ch, v = imgui.input_int("Appearance seed", st.seed)
        if ch:
            st.seed = max(0, v)
        remember(ui, "seed")
        explain(ui, PORTRAIT_FIXES if app.portrait_active else "Which face: every seed is another identity.")
        imgui.same_line()
        if imgui.button("Random##seed"):
            st.seed = S.random_seed()
    ch, v = imgui.input_int("Motion seed", st.motion_seed)
    if ch:
        st.motion_seed = max(0, v)
    remember(ui, "motion_seed")
    explain(ui, T0_NOTE + (f"  (Now t = {S.timeline_pos(st):.2f}.)" if not st.long_clip else ""))
    imgui.same_line()
    if imgui.button("Random##motion"):
        st.motion_seed = S.random_seed()
    imgui.pop_item_width()
    with disabled_if(ui, app.portrait_active, "psi"):
        ch, v = imgui.slider_float("psi", st.psi, 0.0, 1.0, "%.2f")
        if ch:
            st.psi = v
        remember(ui, "psi")
        explain(ui, PORTRAIT_FIXES if app.portrait_active else
                "Truncation: lower values give more typical faces, 1 the model's full variety.")
