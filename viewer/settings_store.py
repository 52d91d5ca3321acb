"""Settings remembered between runs (last checkpoint, window size, export folder, layout), as JSON.

Location: ``$PV3D_VIEWER_CONFIG`` (a ``.json`` file, or a folder that gets ``viewer.json``), else
``$XDG_CONFIG_HOME/pv3d-studio/viewer.json`` (``~/.config/...``; ``%APPDATA%`` on Windows).
Unknown keys are kept, bad values fall back to defaults, a corrupt file is ignored (and reported),
and writes go to a temporary file renamed into place.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pv3d_core.render.cameras import PATHS


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
    # the layout and the last choices of the widgets (enumerations are checked where they are used)
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


def _coerce(default, value):
    """``value`` if it has the type of ``default`` (ints accepted for floats), else ``default``."""
    if default is None:
        return value if value is None or isinstance(value, str) else None
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    if isinstance(default, float):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else default
    if isinstance(default, str):
        return value if isinstance(value, str) and value else default
    return default


def load(path: Path | None = None) -> tuple[ViewerSettings, str | None]:
    """(settings, warning or None). Never raises on a missing or corrupt file."""
    path = path or config_path()
    s = ViewerSettings()
    if not path.exists():
        return s, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return s, f"ignored unreadable viewer settings {path}: {e}"
    for f in fields(s):
        if f.name in data:
            setattr(s, f.name, _coerce(getattr(s, f.name), data[f.name]))
    if s.export_camera not in PATHS:
        s.export_camera = ViewerSettings.export_camera
    s.window_width = min(max(s.window_width, 400), 8192)
    s.window_height = min(max(s.window_height, 300), 8192)
    return s, None


def save(s: ViewerSettings, path: Path | None = None) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    from pv3d_core.files import atomic_write_text

    path = path or config_path()
    atomic_write_text(path, json.dumps(asdict(s), indent=2) + "\n")
    return path
