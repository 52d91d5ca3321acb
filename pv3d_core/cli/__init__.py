"""`pv3d`: the command line, one module per command group, each with ``add_parser(sub)``.

The error handling (one line and status 2 for user errors, a traceback and how to report it for bugs)
is :func:`pv3d_core.cli.runner.run_command`.
"""
from __future__ import annotations

from . import data, doctor, encoder, evaluate, generate, mesh, portraits, train
from .runner import EXIT_BUG, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OneLineParser, run_command

COMMAND_GROUPS = (generate, data, train, encoder, mesh, evaluate, portraits, doctor)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="pv3d", description="PV3D Studio command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:         # --help, or a bad option (one line, status 2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_command(args)


__all__ = ["main", "build_parser", "run_command", "EXIT_OK", "EXIT_BUG", "EXIT_USAGE", "EXIT_INTERRUPTED"]
