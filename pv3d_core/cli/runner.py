"""Running one command with the project's error handling (shared by `pv3d` and torchrun's entry point).

Errors a user can fix (:class:`pv3d_core.errors.UserError`, and a full disk or quota wherever it
shows up) print one line and exit with status 2; any other exception is a bug: its traceback is printed
with a line on how to report it (status 1). Library code logs with :mod:`logging`; the messages reach
the terminal through the handler set here.

SIGTERM and SIGHUP (a batch scheduler's stop, a closed terminal) are handled as Ctrl-C is: they raise
:class:`pv3d_core.errors.Terminated`, a KeyboardInterrupt, so every temporary file is removed on the
way out (trainings catch them first and save a checkpoint); the exit status is 128 + the signal.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import traceback

from ..errors import REPORT_BUG, Cancelled, Terminated, UserError, one_line

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: errors of the disk, not of the program: reported in one line like a user error
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
TERMINATING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (``pv3d generate: error: argument --frames: ...``), exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within: SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (once; a second signal
    during the clean-up is ignored so that the clean-up finishes). Does nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def handler(signum, frame):
        for s in TERMINATING_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum, signal.Signals(signum).name)

    for s in TERMINATING_SIGNALS:
        old[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_command(args, prog: str = "pv3d") -> int:
    """``args.func(args)`` with the project's error handling (see the module doc)."""
    _log_to_stderr()
    with terminate_as_interrupt():
        return _run(args, prog)


def torchrun_main(add_arguments, func, prog: str, argv=None, description: str | None = None) -> int:
    """The entry point of a command that torchrun starts (``torchrun ... -m pv3d_core.cli.X``): its
    options (``add_arguments(parser)``), errors handled as ``pv3d`` handles them, and the process group
    closed at the end."""
    p = OneLineParser(prog=prog.replace(" ", "-"), description=description)
    add_arguments(p)
    args = p.parse_args(argv)
    args.func = func
    try:
        return run_command(args, prog=prog)
    finally:
        import torch.distributed as td

        if td.is_available() and td.is_initialized():
            td.destroy_process_group()


def _run(args, prog: str) -> int:
    try:
        return int(args.func(args) or 0)
    except Terminated as e:
        print(f"{prog}: {e}; nothing partial was written", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing partial was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:              # `pv3d info | head -1`: the reader left; not an error
        try:                             # and Python's flush of stdout at exit must not complain either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK
    except Cancelled as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a bug: show everything, say how to report it
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:      # a full disk is never a bug
            where = f" ({e.filename})" if e.filename else ""
            print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exc()
        print(f"{prog}: {REPORT_BUG}", file=sys.stderr)
        return EXIT_BUG


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (tests and tools replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _log_to_stderr() -> None:
    """Library messages (INFO and above) on stderr, once."""
    lib = logging.getLogger("pv3d_core")
    if not any(isinstance(h, _StderrHandler) for h in lib.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        lib.addHandler(h)
        lib.setLevel(logging.INFO)
