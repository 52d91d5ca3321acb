"""Imported at start-up by the viewer processes of the GUI tests (this folder is put first on their
PYTHONPATH): with $PV3D_TEST_FIT_STEPS="W,P", a portrait fit runs W latent steps and P pivotal-tuning
steps instead of hundreds, so a test sees a real fit (detection, crop, camera, inversion, tuning) end
to end in seconds. Nothing else changes."""
import os

_steps = os.environ.get("PV3D_TEST_FIT_STEPS")
if _steps:
    import dataclasses

    import pv3d_core.invert as _invert

    _w, _p = (int(x) for x in _steps.split(","))
    for _f in dataclasses.fields(_invert.InversionConfig):
        if _f.name in ("w_steps", "pti_steps", "w_avg_samples"):
            _f.default = {"w_steps": _w, "pti_steps": _p, "w_avg_samples": 64}[_f.name]
    _defaults = list(_invert.InversionConfig.__init__.__defaults__)
    _names = [f.name for f in dataclasses.fields(_invert.InversionConfig)]
    for _name, _value in (("w_steps", _w), ("pti_steps", _p), ("w_avg_samples", 64)):
        _defaults[_names.index(_name)] = _value
    _invert.InversionConfig.__init__.__defaults__ = tuple(_defaults)
