"""Settings remembered between runs (last checkpoint, window size, export folder, layout), as JSON.

Location: ``$PV3D_VIEWER_CONFIG`` (a ``.json`` file, or a folder that gets ``viewer.json``), else
``$XDG_CONFIG_HOME/pv3d-studio/viewer.json`` (``~/.config/...``; ``%APPDATA%`` on Windows).
Every value is checked on load against the range the viewer's own widgets allow (:data:`RULES`): a value
of the wrong type or out of range goes back to its default, and :func:`load` returns a note naming it
(the status bar shows it). Keys this version does not know are kept and written back. A file that is
not a JSON object (corrupt, too deeply nested, larger than :data:`MAX_BYTES`) is ignored, with a note;
a UTF-8 byte-order mark is accepted. Writes go to a temporary file renamed into place.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pv3d_core.errors import UserError
from pv3d_core.mesh import MESH_FORMATS
from pv3d_core.render.cameras import PATHS
from pv3d_core.rules import Bool, Choice, Float, Int, Str

from .state import PLAYBACK_MODES, RESOLUTIONS

#: a settings file larger than this is not read (it holds a few hundred bytes)
MAX_BYTES = 1 << 20


@dataclass
class ViewerSettings:
    last_checkpoint: str | None = None
    window_width: int = 1280
    window_height: int = 800
    export_folder: str = field(default_factory=lambda: str(Path.home() / "pv3d-exports"))
    export_fps: float = 25.0
    export_frames: int = 48
    export_resolution: int = 256
    export_camera: str = "fixed"
    # the layout and the last choices of the widgets
    panel_tab: str = "Scene"
    show_performance: bool = False
    playback_mode: str = "realtime"
    mesh_resolution: int = 128
    mesh_level: float = 10.0
    mesh_format: str = "glb"
    mesh_frames: int = 16
    walk_frames: int = 48
    walk_appearance: bool = True
    walk_motion: bool = False
    #: keys of the file this version does not know, written back unchanged (not a setting)
    unknown_keys: dict = field(default_factory=dict, repr=False, compare=False)

    def to_json_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("unknown_keys")
        return {**{k: v for k, v in extra.items() if k not in d}, **d}


#: what each setting may hold: the ranges of the viewer's widgets (export panel, window)
RULES = {
    "last_checkpoint": Str(4096, optional=True),
    "window_width": Int(400, 8192),
    "window_height": Int(300, 8192),
    "export_folder": Str(4096, nonempty=True),
    "export_fps": Float(1, 60),
    "export_frames": Int(2, 600),
    "export_resolution": Choice(tuple(RESOLUTIONS)),
    "export_camera": Choice(tuple(PATHS)),
    "panel_tab": Str(64, nonempty=True),          # checked against the tabs where it is used
    "show_performance": Bool(),
    "playback_mode": Choice(PLAYBACK_MODES),
    "mesh_resolution": Int(16, 512),
    "mesh_level": Float(1, 50),
    "mesh_format": Choice(MESH_FORMATS),
    "mesh_frames": Int(2, 120),
    "walk_frames": Int(2, 300),
    "walk_appearance": Bool(),
    "walk_motion": Bool(),
}


def config_path() -> Path:
    env = os.environ.get("PV3D_VIEWER_CONFIG")
    if env:
        p = Path(env).expanduser()
        return p if p.suffix.lower() == ".json" else p / "viewer.json"
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "pv3d-studio" / "viewer.json"


def load(path: Path | None = None) -> tuple[ViewerSettings, str | None]:
    """(settings, note or None). Never raises on a missing, corrupt or hostile file; the note says
    what was ignored or reset to its default."""
    path = path or config_path()
    s = ViewerSettings()
    try:
        if not path.exists():
            return s, None
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES // 1024} KB")
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except RecursionError:
        return s, f"ignored unreadable viewer settings {path}: nested too deeply"
    except (OSError, ValueError) as e:
        return s, f"ignored unreadable viewer settings {path}: {str(e)[:200]}"
    reset = []
    for name, rule in RULES.items():
        if name not in data:
            continue
        try:
            v = rule.check(name, data[name])
            setattr(s, name, float(v) if isinstance(getattr(s, name), float) else v)
        except UserError:
            reset.append(name)
    s.unknown_keys = {k: v for k, v in data.items() if k not in RULES}
    note = None
    if reset:
        note = (f"viewer settings: {', '.join(reset)} out of range or of the wrong type in {path}; "
                "using the default" + ("s" if len(reset) > 1 else ""))
    return s, note


def save(s: ViewerSettings, path: Path | None = None) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    from pv3d_core.files import atomic_write_text

    path = path or config_path()
    d = s.to_json_dict()
    try:
        text = json.dumps(d, indent=2)
    except (ValueError, TypeError, RecursionError):     # an unknown key's value we cannot write back
        text = json.dumps({k: v for k, v in d.items() if k in RULES}, indent=2)
    atomic_write_text(path, text + "\n")
    return path
