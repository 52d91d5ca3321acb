"""The command line's error handling: user errors are one line and exit 2; bugs keep their traceback."""
import pytest

from pv3d_core.cli import main


def test_a_bug_shows_its_traceback_and_how_to_report_it(monkeypatch, tmp_path, capsys, tiny_ckpt):
    """A ValueError from inside the library is a programming error, not a user's: it used to be
    swallowed into a one-line exit 2, which hid where it came from."""
    import pv3d_core.io

    def broken(*a, **k):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(pv3d_core.io, "load_generator", broken)
    rc = main(["generate", "--ckpt", str(tiny_ckpt), "--frames", "1", "-o", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback (most recent call last)" in err and "ValueError: an internal inconsistency" in err
    assert "bug in PV3D Studio" in err and "report" in err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("argv, message", [
    (["info", "{tmp}/missing.safetensors"], "checkpoint not found"),
    (["generate", "--frames", "0", "-o", "{tmp}/a.mp4"], "argument --frames: must be an integer within 1.."),
    (["generate", "--device", "warp-drive", "-o", "{tmp}/a.mp4"], "is not a device"),
    (["train", "--data", "{tmp}", "--set", "no_such_option=1"], "unknown training option"),
    (["edit", "{tmp}", "--speed", "0", "-o", "{tmp}/a.mp4"], "argument --speed: must be a finite number >= 0.01"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_user_error_classes_live_in_one_module():
    from pv3d_core import errors, export, io, metrics
    from pv3d_core.data import layout
    from pv3d_core.faces import detect
    from pv3d_core.render import cuda_ops

    for cls in (io.CheckpointError, export.ExportError, metrics.MetricError, layout.DatasetError, detect.FaceError,
                cuda_ops.KernelUnavailable):
        assert issubclass(cls, errors.UserError) and cls.__module__ == "pv3d_core.errors", cls
        assert not issubclass(cls, ValueError), cls      # so `except ValueError` never mistakes one for a bug
    assert not issubclass(errors.Cancelled, errors.UserError)
