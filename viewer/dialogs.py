"""Open / save / choose-folder dialogs: the system's, through imgui-bundle's portable file dialogs.

pfd runs the desktop's own dialog (zenity, kdialog, matedialog or qarma on Linux; the native ones on
Windows and macOS) as a separate process, so the UI keeps drawing while it is open: :meth:`Dialogs.poll`,
called once a frame, hands each answer to its callback on the UI thread. Where Linux has none of those
programs, a small in-window prompt asks for the path instead (:meth:`Dialogs.draw`).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

FILTERS = {
    "model": ["Checkpoints and portraits", "*.safetensors *.ckpt *.pt *.pth", "All files", "*"],
    "photo": ["Photos", "*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff", "All files", "*"],
    "any": ["Checkpoints, portraits, photos, camera paths",
            "*.safetensors *.ckpt *.pt *.pth *.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.json", "All files", "*"],
    "path": ["Camera paths", "*.json", "All files", "*"],
    "portrait": ["Portraits", "*.safetensors", "All files", "*"],
    "mp4": ["Videos", "*.mp4"],
    "png": ["PNG images", "*.png"],
    "mesh": ["Meshes", "*.glb *.obj *.ply"],
}
LINUX_PROGRAMS = ("zenity", "kdialog", "matedialog", "qarma")


def system_dialogs_available() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return any(shutil.which(p) for p in LINUX_PROGRAMS)


@dataclass
class _Pending:
    kind: str                       # "open" | "save" | "folder"
    title: str
    on_result: Callable[[str], None]
    handle: object = None           # the pfd dialog while it is open
    typed: str = ""                 # the fallback prompt's text


class Dialogs:
    def __init__(self):
        self.pending: list[_Pending] = []
        self.system = system_dialogs_available()
        self.last_result: str | None = None

    @property
    def open_now(self) -> bool:
        return bool(self.pending)

    def open_file(self, title: str, on_result, filters: str = "any", start: str = "") -> None:
        self._start(_Pending("open", title, on_result), filters, start)

    def save_file(self, title: str, on_result, filters: str = "any", start: str = "") -> None:
        self._start(_Pending("save", title, on_result), filters, start)

    def choose_folder(self, title: str, on_result, start: str = "") -> None:
        self._start(_Pending("folder", title, on_result), None, start)

    def _start(self, p: _Pending, filters, start: str) -> None:
        if any(q.title == p.title for q in self.pending):
            return                    # the same dialog is already open
        p.typed = start
        if self.system:
            from imgui_bundle import portable_file_dialogs as pfd

            start = start or str(Path.home())
            if p.kind == "open":
                p.handle = pfd.open_file(p.title, start, FILTERS.get(filters, FILTERS["any"]))
            elif p.kind == "save":
                p.handle = pfd.save_file(p.title, start, FILTERS.get(filters, FILTERS["any"]))
            else:
                p.handle = pfd.select_folder(p.title, start)
        self.pending.append(p)

    def poll(self) -> None:
        """Hand the answers of closed system dialogs to their callbacks (UI thread, once a frame)."""
        for p in list(self.pending):
            if p.handle is None or not p.handle.ready(0):
                continue
            self.pending.remove(p)
            r = p.handle.result()
            path = (r[0] if r else "") if isinstance(r, list) else (r or "")
            if path:
                self.last_result = path
                p.on_result(path)

    def draw(self) -> None:
        """The in-window prompt for dialogs without a system program (a modal with a path field)."""
        from imgui_bundle import imgui

        for p in list(self.pending):
            if p.handle is not None:
                continue
            name = f"{p.title}##pathprompt"
            if not imgui.is_popup_open(name):
                imgui.open_popup(name)
            imgui.set_next_window_size(imgui.ImVec2(560, 0))
            if imgui.begin_popup_modal(name, None, imgui.WindowFlags_.always_auto_resize.value)[0]:
                imgui.text_wrapped("No file dialog program was found (zenity, kdialog, matedialog or qarma); "
                                   "type the path:")
                imgui.push_item_width(-1)
                entered, p.typed = imgui.input_text("##path", p.typed, imgui.InputTextFlags_.enter_returns_true.value)
                imgui.pop_item_width()
                ok = imgui.button("OK") or entered
                imgui.same_line()
                cancel = imgui.button("Cancel")
                if ok or cancel:
                    self.pending.remove(p)
                    imgui.close_current_popup()
                    if ok and p.typed.strip():
                        self.last_result = p.typed.strip()
                        p.on_result(p.typed.strip())
                imgui.end_popup()

    def cancel_all(self) -> None:
        for p in self.pending:
            if p.handle is not None:
                try:
                    p.handle.kill()
                except Exception:  # noqa: BLE001 - leaving must not fail
                    pass
        self.pending = []
