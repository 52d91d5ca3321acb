"""Recently opened files (checkpoints, photos, portraits, camera paths), remembered between runs.

Kept in ``recent.json`` beside the viewer's settings file (:func:`viewer.settings_store.config_path`):
a list of ``{"path": str, "kind": str}``, newest first, at most :data:`KEEP` per kind. Reading is
forgiving (a missing, corrupt or odd file gives an empty or shorter list, never an error); writing is
atomic. Files that no longer exist stay listed but are shown as missing, so a file on an unplugged
drive is not forgotten.
"""
from __future__ import annotations

import json
from pathlib import Path

from pv3d_core.errors import UserError

from . import settings_store

KINDS = ("model", "photo", "portrait", "path")
KEEP = 8
MAX_BYTES = 1 << 20


def recent_path() -> Path:
    return settings_store.config_path().parent / "recent.json"


class RecentFiles:
    def __init__(self, path: Path | None = None):
        self.path = path or recent_path()
        self.items: list[dict] = []
        self.warning: str | None = None

    def load(self) -> "RecentFiles":
        self.items = []
        try:
            if not self.path.is_file():
                return self
            if self.path.stat().st_size > MAX_BYTES:
                raise ValueError("too large")
            data = json.loads(self.path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError, RecursionError) as e:
            self.warning = f"ignored unreadable recent-files list {self.path}: {str(e)[:120]}"
            return self
        if not isinstance(data, list):
            return self
        for it in reversed(data):              # oldest first: each _add puts it at the front
            if isinstance(it, dict) and isinstance(it.get("path"), str) and it.get("kind") in KINDS \
                    and it["path"] and "\0" not in it["path"] and len(it["path"]) < 4096:
                self._add(it["path"], it["kind"])
        return self

    def _add(self, path: str, kind: str) -> None:
        self.items = [it for it in self.items if it["path"] != path]
        self.items.insert(0, {"path": path, "kind": kind})
        for k in KINDS:
            mine = [it for it in self.items if it["kind"] == k]
            for old in mine[KEEP:]:
                self.items.remove(old)

    def add(self, path, kind: str) -> None:
        """Put ``path`` first (as an absolute path) and save; a failed save is remembered in ``warning``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self._add(str(Path(path).expanduser().resolve()), kind)
        self.save()

    def of(self, *kinds) -> list[dict]:
        return [it for it in self.items if not kinds or it["kind"] in kinds]

    def save(self) -> None:
        from pv3d_core.files import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps(self.items, indent=1) + "\n")
            self.warning = None
        except UserError as e:
            self.warning = f"could not remember recent files: {e}"
