"""pv3d-viewer: the desktop viewer and editor (glfw + imgui-bundle + PyOpenGL) over pv3d_core."""
