"""Settings remembered between runs (last checkpoint, window size, export folder), as JSON."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DEFAULTS = {"last_checkpoint": None, "window": [1280, 800], "export_folder": str(Path.home() / "pv3d-exports")}


def config_path() -> Path:
    env = os.environ.get("PV3D_VIEWER_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pv3d-studio" / "viewer.json"


def load() -> dict:
    p = config_path()
    data = dict(DEFAULTS)
    try:
        stored = json.loads(p.read_text())
        if isinstance(stored, dict):
            data.update({k: v for k, v in stored.items() if k in DEFAULTS})
    except (OSError, ValueError):
        pass   # first run or a damaged file: defaults (the file is rewritten on exit)
    return data


def save(data: dict) -> None:
    p = config_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".viewer.", suffix=".json", dir=p.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({k: data.get(k, v) for k, v in DEFAULTS.items()}, f, indent=1)
        os.replace(tmp, p)
    except OSError:
        pass   # settings are a convenience; never fail the app over them
