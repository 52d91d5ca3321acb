"""pyproject.toml against the source tree: a normal (non-editable) install gets every package, the kernel
sources and the default model, under project-specific names. (.ci/run builds a wheel, installs it in a
scratch environment and runs `pv3d generate` from another folder.)"""
import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = tomllib.loads((ROOT / "pyproject.toml").read_text())
ST = CONF["tool"]["setuptools"]


def source_dir(package: str) -> Path:
    dirs = ST.get("package-dir", {})
    for name in sorted(dirs, key=len, reverse=True):          # the longest mapped prefix wins
        if package == name or package.startswith(name + "."):
            return ROOT / dirs[name] / Path(*package[len(name):].split(".")[1:])
    return ROOT / Path(*package.split("."))


def test_every_python_package_of_the_tree_is_installed_and_nothing_generic():
    packages = set(ST["packages"])
    for name, folder in (("pv3d_core", ROOT / "pv3d_core"), ("pv3d_viewer", ROOT / "viewer")):
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            assert ".".join((name, *rel)) in packages, init
    for p in packages:
        assert source_dir(p).is_dir(), p
    assert not {p.split(".")[0] for p in packages} - {"pv3d_core", "pv3d_viewer"}   # no `viewer`, no `cuda`


def test_every_package_data_pattern_matches_files():
    for package, patterns in ST["package-data"].items():
        assert package in ST["packages"], package
        for pattern in patterns:
            assert list(source_dir(package).glob(pattern)), f"{package}: {pattern} matches nothing"


def test_the_data_the_code_reads_is_package_data():
    from pv3d_core.paths import DATA_DIRS, DEFAULT_CHECKPOINT_NAME
    from pv3d_core.render.cuda_ops import KERNEL_FILE

    dirs = ST["package-dir"]
    for folder, source in DATA_DIRS.items():
        assert dirs[f"pv3d_core.{folder}"] == source
    data = ST["package-data"]
    assert any(Path(KERNEL_FILE).match(p) for p in data["pv3d_core.kernels"])
    assert any(Path(DEFAULT_CHECKPOINT_NAME).match(p) for p in data["pv3d_core.checkpoints"])
    from pv3d_core.faces.pose import _MODEL_FILE       # the face model PnP fits (a non-editable wheel needs it)
    assert any(Path(_MODEL_FILE).match(p) for p in data["pv3d_core.faces"])


def test_console_scripts_resolve():
    for script, target in CONF["project"]["scripts"].items():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), script
