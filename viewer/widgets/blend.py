"""Latent exploration: blend the appearance of two seeds, and the motion of two motion seeds, with a
slider; export the walk from one to the other as a video."""
from __future__ import annotations

from imgui_bundle import imgui

from .. import state as S
from .base import action_button, disabled_if, explain, live_slider, remember


def _seed_b(ui, label: str, key: str, value: int, name: str | None = None) -> int:
    """The second seed of a blend: a number field and a Random button (``Random##key``); remembered as
    ``name`` (default ``key``). Returns the (possibly new) seed."""
    imgui.push_item_width(140)
    changed, v = imgui.input_int(label, value)
    if changed:
        value = max(0, v)
    remember(ui, name or key)
    imgui.same_line()
    if imgui.button(f"Random##{key}"):
        value = S.random_seed()
    imgui.pop_item_width()
    return value


def draw(app, st, actions: list, panel) -> None:
    ui, cfg = app.ui, app.settings
    imgui.separator_text("Appearance")
    with disabled_if(ui, app.portrait_active, "blend"):
        imgui.text(f"From seed {st.seed} (Scene tab) to")
        st.seed_b = _seed_b(ui, "Seed B", "seed_b", st.seed_b)
        st.blend = live_slider(ui, panel, "Blend##appearance", st.blend, 0.0, 1.0, "%.2f", "blend")
        explain(ui, "Mixes the two faces' latents w (after the mapping network): 0 is the seed, 1 is seed B.")
    imgui.separator_text("Motion")
    imgui.text(f"From motion seed {st.motion_seed} to")
    st.motion_seed_b = _seed_b(ui, "Motion seed B", "motion_b", st.motion_seed_b, "motion_seed_b")
    st.motion_blend = live_slider(ui, panel, "Blend##motion", st.motion_blend, 0.0, 1.0, "%.2f", "motion_blend")
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
        action_button(ui, actions, "Export walk (MP4)", "export_walk")
