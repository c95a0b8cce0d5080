"""The `cd125gate` command.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their subcommand runs,
so that `cd125gate inspect` does not pay for matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cd125gate.errors import InputError
from cd125gate.version import __version__

SUBCOMMANDS = {
    "inspect": ("cd125gate.cli.inspect", "summarise FCS files (version, instrument, channels, spillover)"),
    "panel": ("cd125gate.cli.panel", "show which channel carries which marker, and what is missing"),
    "simulate": ("cd125gate.cli.simulate", "write simulated stained/control tubes with known truth"),
    "analyze": ("cd125gate.cli.analyze", "analyse one stained tube (and its control) into a result"),
    "analyze-chunk": ("cd125gate.cli.analyze_chunk", "analyse a chunk of samples (workflow jobs): imports paid once, "
                                         "one forked process per sample"),
    "screening": ("cd125gate.cli.screening", "collect per-sample results into screening.tsv/json"),
    "report": ("cd125gate.cli.report", "build the batch review page report.html"),
    "signout": ("cd125gate.cli.signout", "write each sample's one-page sign-out record (signout.pdf)"),
    "workspace": ("cd125gate.cli.workspace", "write a FlowJo 10 workspace (batch.wsp) of the batch's gates"),
    "regate": ("cd125gate.cli.regate", "re-gate one sample with edited gates (Gating-ML) into reviewed_result.json"),
    "validate-sheet": ("cd125gate.cli.validate_sheet", "check a sample sheet before a run"),
    "sheet": ("cd125gate.cli.sheet", "write a sample sheet for a folder of tubes, pairing stained and control"),
}


# The subcommands that analyse events: large numpy arrays come and go in them.
ANALYSING = {"analyze", "analyze-chunk", "regate"}
# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for the next arrays instead of handing it back.

    An analysis allocates and frees hundreds of megabytes of numpy temporaries.
    By default glibc maps every block over a few MB afresh and unmaps it when
    freed, and gives the top of the heap back as soon as it is free, so the next
    array faults the same pages in again: a 1,000,000-event pair spent ~0.3 s of
    its 3.3 s in the kernel on that. Arrays up to 32 MB (the largest glibc lets
    the heap serve) then come from a heap that stays mapped; peak memory grows
    by ~10 MB. Elsewhere (no glibc) this does nothing.
    """
    import ctypes  # here: only the analysing commands pay for it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    mallopt(M_TOP_PAD, 256 * 2**20)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of every subcommand; only ``argv``'s subcommand imports its module (all for --help)."""
    parser = argparse.ArgumentParser(prog="cd125gate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cd125gate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported; `--help` imports them all.
        if wanted is None or name == wanted:
            importlib.import_module(module_name).add_arguments(sp)
            sp.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ANALYSING:
        keep_freed_memory()
    args = build_parser(argv).parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args)
    except InputError as exc:
        print(f"cd125gate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error of ours. Point
        # stdout at /dev/null so that Python's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
