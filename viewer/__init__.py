"""PV3D Studio desktop viewer: glfw window, imgui-bundle UI, render worker thread, GL display.

The GUI-free parts (state mapping, worker, jobs, settings store) import neither glfw nor OpenGL, so
they are unit-testable without a display.
"""
