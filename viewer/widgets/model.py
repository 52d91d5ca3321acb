"""The model: what is shown (a checkpoint or a portrait), open, recent files, back to seeds, save a portrait."""
from __future__ import annotations

from pathlib import Path

from imgui_bundle import imgui

from .base import MUTED, action_button, explain, remember

RECENT_LABELS = {"model": "model", "photo": "photo", "portrait": "portrait", "path": "camera path"}


def draw(app, st, actions: list) -> None:
    ui = app.ui
    imgui.separator_text("Model")
    name = app.worker.model_name
    if app.portrait_active:
        imgui.text_wrapped(f"Portrait {app.actions.portrait_name}  (fitted on {app.actions.portrait_base.name})"
                           if app.actions.portrait_base else f"Portrait {app.actions.portrait_name}")
    else:
        imgui.text_wrapped(f"{name}  on {app.worker.device}")
    action_button(ui, actions, "Open... (O)", ("open_dialog", {"kind": "any"}), "open")
    explain(ui, "Open a checkpoint (.safetensors, .ckpt), a saved portrait, a photo to fit, or a camera path. "
                "Dropping the file on the window does the same.")
    imgui.same_line()
    if imgui.button("Recent"):
        imgui.open_popup("recent##menu")
    remember(ui, "recent")
    if imgui.begin_popup("recent##menu"):
        items = app.recent.of()
        if not items:
            imgui.text_disabled("nothing opened yet")
        for i, it in enumerate(items):
            p = Path(it["path"])
            exists = p.exists()
            label = f"{p.name}   ({RECENT_LABELS.get(it['kind'], it['kind'])}{'' if exists else ', missing'})##r{i}"
            if imgui.menu_item(label, "", False, exists)[0]:
                actions.append(("open", {"path": it["path"]}))
            remember(ui, f"recent_{i}")
            if imgui.is_item_hovered():
                imgui.set_tooltip(it["path"])
        imgui.end_popup()
    imgui.same_line()
    if imgui.button("Embedded model"):
        actions.append("load_default")
    explain(ui, "Load the default model that ships with PV3D Studio (checkpoints/).")
    if app.portrait_active:
        action_button(ui, actions, "Back to seeds", "clear_portrait", "back_to_seeds")
        base = app.actions.portrait_base.name if app.actions.portrait_base else "the model"
        explain(ui, f"Leave the portrait: back to {base}, the model it was fitted on, with appearance seeds.")
        if app.actions.portrait is not None:
            imgui.same_line()
            action_button(ui, actions, "Save portrait...", "save_portrait")
            explain(ui, "Save the fitted portrait (tuned generator and latent) as pv3d animate --save-portrait "
                        "does; open it again later, here or with pv3d animate.")
    else:
        imgui.push_style_color(imgui.Col_.text.value, MUTED)
        imgui.text_wrapped("Drop a checkpoint or a photo on the window")
        imgui.pop_style_color()
