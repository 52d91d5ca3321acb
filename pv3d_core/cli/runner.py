"""Running one command with the project's error handling (shared by `pv3d` and torchrun's entry point).

Errors a user can fix (:class:`pv3d_core.errors.UserError`) print one line and exit with status 2;
any other exception is a bug: its traceback is printed with a line on how to report it (status 1).
Library code logs with :mod:`logging`; the messages reach the terminal through the handler set here.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback

from ..errors import REPORT_BUG, Cancelled, UserError, one_line

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_command(args, prog: str = "pv3d") -> int:
    """``args.func(args)`` with the project's error handling (see the module doc)."""
    _log_to_stderr()
    try:
        return int(args.func(args) or 0)
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
    except Exception:  # noqa: BLE001 - a bug: show everything, say how to report it
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
