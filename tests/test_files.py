"""pv3d_core.files: the one atomic writer every export, checkpoint and dataset file goes through."""
import os
import stat

import numpy as np
import pytest

from pv3d_core import files
from pv3d_core.export import ExportError, write_mp4, write_png, write_png_folder
from pv3d_core.io import CheckpointError, check_writable


class JobError(ValueError):
    pass


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_written_files_get_plain_open_permissions(tmp_path):
    """mkstemp makes 0600 files; an export must be readable like any file the user writes."""
    old = os.umask(0o022)
    try:
        expected = 0o644
        png = write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        txt = files.atomic_write_text(tmp_path / "r.json", "{}")
        folder = write_png_folder(tmp_path / "frames", [np.zeros((4, 4, 3), np.uint8)])
    finally:
        os.umask(old)
    assert _mode(png) == expected and _mode(txt) == expected
    assert _mode(folder / "frame_00000.png") == expected
    assert _mode(folder) == 0o755


def test_failure_leaves_destination_and_folder_untouched(tmp_path):
    dst = tmp_path / "keep.bin"
    dst.write_bytes(b"old")

    def boom(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        files.atomic_write(dst, boom, JobError)
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]


def test_os_errors_become_the_callers_error_class(tmp_path):
    def enospc(tmp):
        raise OSError(28, "No space left on device")

    with pytest.raises(JobError, match="No space left on device"):
        files.atomic_write(tmp_path / "x.bin", enospc, JobError)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        write_png(tmp_path / "d.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(CheckpointError, match="is a folder"):
        check_writable(tmp_path / "d.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_refused_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(JobError, match="cannot write to"):
            files.check_writable(ro / "x.mp4", JobError)
    finally:
        ro.chmod(0o700)


def test_unwritable_special_path_is_refused():
    with pytest.raises(JobError, match="cannot (write to|create folder)"):
        files.check_writable("/proc/pv3d-nope/x.json", JobError)


def test_cancelled_mp4_leaves_nothing(tmp_path):
    import threading

    cancel = threading.Event()

    def frames():
        for i in range(5):
            if i == 2:
                cancel.set()
            yield np.full((16, 16, 3), i * 40, np.uint8)

    from pv3d_core.export import Cancelled

    with pytest.raises(Cancelled):
        write_mp4(tmp_path / "c.mp4", frames(), cancel=cancel)
    assert list(tmp_path.iterdir()) == []
    out = write_mp4(tmp_path / "ok.mp4", (np.full((16, 16, 3), 9, np.uint8) for _ in range(3)))
    assert out.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == ["ok.mp4"]


def test_png_folder_refuses_a_non_empty_folder_and_keeps_it(tmp_path):
    f = tmp_path / "frames"
    f.mkdir()
    (f / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match="not empty"):
        write_png_folder(f, [np.zeros((4, 4, 3), np.uint8)])
    assert (f / "mine.txt").read_text() == "keep"


def test_replacing_a_file_keeps_its_mode(tmp_path):
    """Overwriting an output used to reset it to 0666 minus the umask (a 0600 file became readable)."""
    dst = tmp_path / "private.json"
    dst.write_text("{}")
    os.chmod(dst, 0o600)
    files.atomic_write_text(dst, '{"a": 1}')
    assert _mode(dst) == 0o600 and dst.read_text() == '{"a": 1}'
    os.chmod(dst, 0o664)
    write_png(dst.with_suffix(".png"), np.zeros((2, 2, 3), np.uint8))
    files.atomic_write_text(dst, "{}")
    assert _mode(dst) == 0o664


def test_temporaries_are_named_and_locked_while_written(tmp_path):
    import fcntl

    seen = []

    def write(tmp):
        seen.append(os.path.basename(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:                   # another process (or descriptor) cannot take the lock: it is alive
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        os.utime(tmp, (0, 0))                  # even an old-looking live temporary is kept
        assert files.remove_stale_temporaries(tmp_path) == []
        with open(tmp, "wb") as f:
            f.write(b"data")

    files.atomic_write(tmp_path / "out.bin", write)
    assert files.is_temporary_name(seen[0]) and seen[0].startswith(".out.pv3d-tmp.") and seen[0].endswith(".bin")
    assert (tmp_path / "out.bin").read_bytes() == b"data"


def test_only_our_unlocked_old_temporaries_are_swept(tmp_path):
    import time

    old = time.time() - 3600
    ours = tmp_path / ".clip.pv3d-tmp.abcdefgh.mp4"
    young = tmp_path / ".clip.pv3d-tmp.ijklmnop.mp4"
    users = [tmp_path / ".clip.mp4", tmp_path / "clip.pv3d-tmp.abcdefgh.mp4", tmp_path / ".clip.abcdefgh.mp4"]
    for p in [ours, young, *users]:
        p.write_bytes(b"x")
    link = tmp_path / ".link.pv3d-tmp.abcdefgh.mp4"
    link.symlink_to(users[0])
    fifo = tmp_path / ".fifo.pv3d-tmp.abcdefgh.mp4"
    os.mkfifo(fifo)
    for p in [ours, *users, fifo]:
        os.utime(p, (old, old))
    os.utime(link, (old, old), follow_symlinks=False)
    assert files.remove_stale_temporaries(tmp_path) == [ours]
    assert young.exists() and link.is_symlink() and fifo.exists() and all(p.exists() for p in users)
