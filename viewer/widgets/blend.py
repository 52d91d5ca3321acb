"""Latent exploration: blend the appearance of two seeds, and the motion of two motion seeds, with a
slider; export the walk from one to the other as a video."""
from __future__ import annotations

from imgui_bundle import imgui

from .. import state as S
from .base import disabled_if, explain, remember


def draw(app, st, actions: list, panel) -> None:
    ui, cfg = app.ui, app.settings
    imgui.separator_text("Appearance")
    with disabled_if(ui, app.portrait_active, "blend"):
        imgui.text(f"From seed {st.seed} (Scene tab) to")
        imgui.push_item_width(140)
        ch, v = imgui.input_int("Seed B", st.seed_b)
        if ch:
            st.seed_b = max(0, v)
        remember(ui, "seed_b")
        imgui.same_line()
        if imgui.button("Random##seed_b"):
            st.seed_b = S.random_seed()
        imgui.pop_item_width()
        ch, v = imgui.slider_float("Blend##appearance", st.blend, 0.0, 1.0, "%.2f")
        if ch:
            st.blend = v
        if imgui.is_item_active():
            panel.interacting = True
        remember(ui, "blend")
        explain(ui, "Mixes the two faces' latents w (after the mapping network): 0 is the seed, 1 is seed B.")
    imgui.separator_text("Motion")
    imgui.text(f"From motion seed {st.motion_seed} to")
    imgui.push_item_width(140)
    ch, v = imgui.input_int("Motion seed B", st.motion_seed_b)
    if ch:
        st.motion_seed_b = max(0, v)
    remember(ui, "motion_seed_b")
    imgui.same_line()
    if imgui.button("Random##motion_b"):
        st.motion_seed_b = S.random_seed()
    imgui.pop_item_width()
    ch, v = imgui.slider_float("Blend##motion", st.motion_blend, 0.0, 1.0, "%.2f")
    if ch:
        st.motion_blend = v
    if imgui.is_item_active():
        panel.interacting = True
    remember(ui, "motion_blend")
    explain(ui, "Mixes the two motion codes along the great circle between them. At t = 0 every motion gives "
                "the same frame: play or move the timeline to see it.")
    imgui.separator_text("Walk")
    imgui.text_wrapped("A video from A to B at the current moment and camera (size, fps and folder: Export tab).")
    ch, v = imgui.checkbox("appearance", bool(cfg.walk_appearance))
    if ch:
        cfg.walk_appearance = v
    imgui.same_line()
    ch, v = imgui.checkbox("motion", bool(cfg.walk_motion))
    if ch:
        cfg.walk_motion = v
    imgui.push_item_width(150)
    ch, v = imgui.slider_int("Frames##walk", int(cfg.walk_frames), 2, 300)
    if ch:
        cfg.walk_frames = v
    imgui.pop_item_width()
    with disabled_if(ui, not (cfg.walk_appearance or cfg.walk_motion), "export_walk"):
        if imgui.button("Export walk (MP4)"):
            actions.append("export_walk")
        remember(ui, "export_walk")
