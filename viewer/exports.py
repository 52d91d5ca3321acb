"""The viewer's exports, each a background job calling what the command line calls: the timeline as mp4
(``export.clip_settings``), a PNG of the frame, a latent walk (``export.walk_settings``), the keyframed
camera path (``export.path_settings``), the surface as PLY/OBJ/GLB and a mesh sequence over the
timeline (``pv3d_core.mesh``). Files are named after the portrait shown, else after the seeds."""
from __future__ import annotations

from pathlib import Path

from pv3d_core.errors import UserError

from . import state as S
from .jobs import job_renderer, mesh_job, mesh_sequence_job, mp4_job, output_name, png_job

MESH_FORMATS = ("glb", "obj", "ply")
MESH_GRIDS = (64, 96, 128, 192, 256)


class Exports:
    ACTIONS = ("export_mp4", "export_png", "export_ply", "export_mesh", "export_mesh_sequence", "export_walk",
               "export_path", "choose_export_folder")

    def __init__(self, app):
        self.app = app

    def do(self, action: str, **kw):
        if action == "choose_export_folder":
            app = self.app
            app.dialogs.choose_folder("Export folder", lambda p: setattr(app.settings, "export_folder", p),
                                      str(Path(app.settings.export_folder).expanduser()))
            return None
        if action == "export_ply":
            return self.export("mesh", kw.get("path"), fmt="ply")
        return self.export(action[len("export_"):], kw.get("path"), **{k: v for k, v in kw.items() if k != "path"})

    def _name(self, base, ext: str, tag: str = "") -> Path:
        app = self.app
        portrait = app.actions.portrait_name if app.portrait_active else None
        return output_name(Path(app.settings.export_folder).expanduser(), base, ext, tag, portrait=portrait)

    def mesh_settings(self) -> tuple[int, float, str]:
        cfg = self.app.settings
        grid = cfg.mesh_resolution if cfg.mesh_resolution in MESH_GRIDS else 128
        level = float(cfg.mesh_level) if 0 < float(cfg.mesh_level) < 1000 else 10.0
        fmt = cfg.mesh_format if cfg.mesh_format in MESH_FORMATS else "glb"
        return grid, level, fmt

    def export(self, kind: str, path=None, fmt: str | None = None):
        """Start the export ``kind`` (mp4, png, mesh, mesh_sequence, walk, path) into ``path`` or a new name."""
        from pv3d_core.export import ClipSpec, ExportError, clip_settings, path_settings, walk_settings

        app = self.app
        G = app.worker.generator
        if G is None:
            app.message = "nothing to export: no model loaded"
            return None
        cfg = app.settings
        ws = app.worker.renderer.appearance_ws if app.worker.renderer is not None else None
        res = int(cfg.export_resolution) if int(cfg.export_resolution) in S.RESOLUTIONS else 256
        base = S.render_settings(app.st).with_(resolution=res)
        try:
            if kind == "mp4":
                n = max(2, min(int(cfg.export_frames), 10_000))
                spec = ClipSpec(frames=n, camera=cfg.export_camera)
                cams = clip_settings(base, spec)
                length = S.timeline_length(app.st)
                todo = [S.render_settings(app.st, pos=length * i / (n - 1)).with_(
                    resolution=res, yaw=c.yaw, pitch=c.pitch) for i, c in enumerate(cams)]
                path = path or self._name(base, "mp4", f"_{cfg.export_camera}")
                job = app.jobs.start("MP4", mp4_job(G, base, spec, cfg.export_fps, path, ws, settings_list=todo),
                                     app.actions.job_done)
            elif kind == "walk":
                n = max(2, min(int(cfg.walk_frames), 10_000))
                st = app.st
                looks = bool(cfg.walk_appearance) and ws is None      # a portrait's appearance is fixed
                walk_base = base.with_(seed_b=int(st.seed_b) if looks else None, blend=0.0,
                                       motion_seed_b=int(st.motion_seed_b) if cfg.walk_motion else None,
                                       motion_blend=0.0)
                todo = walk_settings(walk_base, n)
                path = path or self._name(walk_base, "mp4", f"_walk-to{st.seed_b}")
                job = app.jobs.start("walk", mp4_job(G, base, None, cfg.export_fps, path, ws, settings_list=todo),
                                     app.actions.job_done)
            elif kind == "path":
                todo = path_settings(base, app.path_editor.path)
                path = path or self._name(base, "mp4", "_path")
                job = app.jobs.start("path video", mp4_job(G, base, None, app.path_editor.path.fps, path, ws,
                                                           settings_list=todo), app.actions.job_done)
            elif kind == "png":
                path = path or self._name(base, "png")

                def body(job, G=G, base=base, path=path, ws=ws):
                    img = job_renderer(G, ws).render(base).numpy()
                    return png_job(img, path)(job)
                job = app.jobs.start("PNG", body, app.actions.job_done)
            elif kind == "mesh":
                grid, level, default_fmt = self.mesh_settings()
                fmt = fmt or (Path(path).suffix.lstrip(".").lower() if path else default_fmt)
                path = path or self._name(base, fmt, f"_t{base.t:.2f}")
                job = app.jobs.start(fmt.upper(), mesh_job(G, base, path, grid, level, fmt, appearance_ws=ws),
                                     app.actions.job_done)
            elif kind == "mesh_sequence":
                grid, level, default_fmt = self.mesh_settings()
                n = max(2, min(int(cfg.mesh_frames), 1000))
                length = S.timeline_length(app.st)
                todo = [S.render_settings(app.st, pos=length * i / (n - 1)).with_(resolution=res) for i in range(n)]
                path = path or self._name(base, "", "_meshes")
                seconds = app.st.clip_seconds * length / max(1e-6, app.st.speed)     # the timeline played once
                fps = (n - 1) / max(1e-6, seconds)           # n meshes from its start to its end
                job = app.jobs.start("mesh sequence", mesh_sequence_job(G, todo, path, grid, level, fmt or default_fmt,
                                                                        fps=round(fps, 6), appearance_ws=ws),
                                     app.actions.job_done)
            else:
                raise ExportError(f"unknown export kind {kind!r}")
        except UserError as e:
            app.message = f"export failed: {e}"
            app.viewport_error = f"export failed: {e}"
            return None
        app.message = f"exporting {Path(path).name} ..."
        return job
