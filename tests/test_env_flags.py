"""Yes/no settings read one way: --set values and environment variables share pv3d_core.rules' words."""
import pytest

from pv3d_core import host_memory
from pv3d_core.errors import UsageError
from pv3d_core.render import cuda_ops
from pv3d_core.rules import env_flag, parse_bool
from pv3d_core.train.config import convert_option


@pytest.mark.parametrize("text,want", [("1", True), (" Yes ", True), ("ON", True), ("true", True),
                                       ("0", False), ("no", False), ("Off", False), ("FALSE", False),
                                       ("maybe", None), ("2", None), ("", None)])
def test_parse_bool(text, want):
    assert parse_bool(text) is want


def test_env_flag_default_words_and_a_warning(monkeypatch):
    monkeypatch.delenv("PV3D_TEST_FLAG", raising=False)
    assert env_flag("PV3D_TEST_FLAG", True) is True and env_flag("PV3D_TEST_FLAG", False) is False
    monkeypatch.setenv("PV3D_TEST_FLAG", "off")
    assert env_flag("PV3D_TEST_FLAG", True) is False
    monkeypatch.setenv("PV3D_TEST_FLAG", "yes")
    assert env_flag("PV3D_TEST_FLAG", False) is True
    monkeypatch.setenv("PV3D_TEST_FLAG", "maybe")
    with pytest.warns(UserWarning, match="PV3D_TEST_FLAG='maybe'.*default \\(off\\)"):
        assert env_flag("PV3D_TEST_FLAG", False) is False


def test_the_three_readers_agree(monkeypatch):
    monkeypatch.setattr(cuda_ops, "_half_override", None)
    monkeypatch.setenv(cuda_ops.ENV_HALF, "on")
    assert cuda_ops.half_planes_enabled()
    monkeypatch.setenv(cuda_ops.ENV_HALF, "no")
    assert not cuda_ops.half_planes_enabled()
    monkeypatch.setattr(cuda_ops, "_mode_override", None)
    monkeypatch.setenv(cuda_ops.ENV_MODE, "Off")
    assert cuda_ops.kernels_mode() == "off"
    monkeypatch.setenv(cuda_ops.ENV_MODE, "yes")
    assert cuda_ops.kernels_mode() == "on"
    monkeypatch.setattr(host_memory, "_state", {"done": False, "applied": False, "reason": "not asked yet"})
    monkeypatch.setenv(host_memory.ENV, "No")
    assert host_memory.keep_freed_memory() is False
    assert host_memory._state["reason"] == f"off by {host_memory.ENV}"
    assert convert_option("x", "Off", bool) is False and convert_option("x", " on", bool) is True
    with pytest.raises(UsageError):
        convert_option("x", "maybe", bool)
