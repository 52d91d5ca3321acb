"""Exports: the folder, the timeline video and PNG; meshes (grid, level, format) of the moment and over
the timeline. Jobs and their messages show in the job area below the tabs."""
from __future__ import annotations

from imgui_bundle import imgui
from pv3d_core.render.cameras import PATHS

from .. import state as S
from ..exports import MESH_FORMATS, MESH_GRIDS
from .base import action_button, combo, explain, remember


def draw(app, st, actions: list, panel) -> None:
    ui, cfg = app.ui, app.settings
    imgui.separator_text("Where")
    imgui.push_item_width(250)
    ch, v = imgui.input_text("##folder", cfg.export_folder)
    if ch and v.strip():
        cfg.export_folder = v
    imgui.pop_item_width()
    remember(ui, "export_folder")
    imgui.same_line()
    if imgui.button("Choose..."):
        actions.append("choose_export_folder")
    imgui.separator_text("Video and picture")
    imgui.push_item_width(150)
    ch, v = imgui.slider_int("Frames", int(cfg.export_frames), 2, 600)
    if ch:
        cfg.export_frames = v
    ch, v = imgui.slider_float("FPS", float(cfg.export_fps), 1.0, 60.0, "%.0f")
    if ch:
        cfg.export_fps = v
    imgui.pop_item_width()
    imgui.push_item_width(80)
    ch, v = combo("Size##export", cfg.export_resolution, S.RESOLUTIONS, 256)
    if ch:
        cfg.export_resolution = v
    imgui.same_line()
    ch, v = combo("Camera##export", cfg.export_camera, PATHS, "fixed")
    if ch:
        cfg.export_camera = v
    imgui.pop_item_width()
    explain(ui, "fixed: the current view; orbit and yaw: moves around it. For your own camera moves, "
                "use the Path tab.")
    action_button(ui, actions, "MP4 of the timeline (E)", "export_mp4")
    imgui.same_line()
    action_button(ui, actions, "PNG", "export_png")
    imgui.separator_text("Mesh")
    imgui.push_item_width(80)
    ch, v = combo("Grid", cfg.mesh_resolution, MESH_GRIDS, 128)
    if ch:
        cfg.mesh_resolution = v
    explain(ui, "Marching-cubes grid per side: finer surfaces take longer (256: about 4x the time of 128).")
    imgui.same_line()
    ch, v = combo("Format", cfg.mesh_format, MESH_FORMATS, "glb")
    if ch:
        cfg.mesh_format = v
    remember(ui, "mesh_format")
    explain(ui, "GLB: web viewers and Blender, colours and normals. OBJ and PLY: vertex colours, for Blender "
                "and MeshLab. All in world units, +Y up, the face towards +Z.")
    imgui.pop_item_width()
    imgui.push_item_width(150)
    ch, v = imgui.slider_float("Level", float(cfg.mesh_level), 1.0, 50.0, "%.1f")
    if ch:
        cfg.mesh_level = v
    explain(ui, "The density the surface is drawn at: higher gives a tighter surface, lower a fuller one.")
    ch, v = imgui.slider_int("Sequence frames", int(cfg.mesh_frames), 2, 120)
    if ch:
        cfg.mesh_frames = v
    imgui.pop_item_width()
    action_button(ui, actions, "Mesh of this moment", "export_mesh")
    imgui.same_line()
    action_button(ui, actions, "Mesh sequence", "export_mesh_sequence")
    explain(ui, "One mesh per frame over the timeline in a new folder, with index.json (file, t, seconds).")
