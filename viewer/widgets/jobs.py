"""The job area: always visible under the tabs, whatever tab is open. Running jobs with one progress bar
(stage, percent, time left) and a cancel button; finished ones with what they saved, or why they failed,
wrapped to the panel's width."""
from __future__ import annotations

from imgui_bundle import imgui

from .base import ERROR, MUTED, remember


def draw(app, height: float) -> None:
    ui = app.ui
    imgui.begin_child("jobs", imgui.ImVec2(0, height), imgui.ChildFlags_.borders.value)
    jobs = app.jobs.recent()
    if not jobs:
        imgui.push_style_color(imgui.Col_.text.value, MUTED)
        imgui.text_wrapped("Jobs (exports, portrait fits) show here.")
        imgui.pop_style_color()
    for job in reversed(jobs):          # newest first
        imgui.push_id(str(job.id))
        if job.done:
            if job.error:
                imgui.push_style_color(imgui.Col_.text.value, ERROR)
                imgui.text_wrapped(f"{job.name} failed: {job.error}")
                imgui.pop_style_color()
            elif job.cancelled:
                imgui.text_disabled(f"{job.name} cancelled")
            else:
                imgui.text_wrapped(f"{job.name} saved: {job.result}" if isinstance(job.result, str)
                                   else f"{job.name}: {getattr(job, 'summary', 'done')}")
        else:
            imgui.progress_bar(job.progress, imgui.ImVec2(-62, 0), f"{job.name} {int(job.progress * 100)}%")
            imgui.same_line()
            if imgui.button("Cancel"):
                job.cancel()
            if job.status and job.status != "starting":
                imgui.push_style_color(imgui.Col_.text.value, MUTED)
                imgui.text_wrapped(job.status)
                imgui.pop_style_color()
        imgui.pop_id()
    imgui.end_child()
    remember(ui, "jobs")
